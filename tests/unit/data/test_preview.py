from __future__ import annotations

from hone.data.preview import render_preview, segments
from hone.data.tokenize import tokenize_chat
from hone.models.templates import training_chat_template

CHAT = [
    {"role": "system", "content": "Reply in JSON."},
    {"role": "user", "content": "Ticket: my invoice is wrong"},
    {"role": "assistant", "content": '{"category": "billing"}'},
]


def test_segments_mark_exactly_the_answer(tokenizer) -> None:
    template = training_chat_template(tokenizer)
    parts = segments(tokenizer, tokenize_chat(tokenizer, CHAT, template, 512))
    assert [p.text for p in parts if p.has_loss] == ['{"category": "billing"}<|im_end|>']
    assert "".join(p.text for p in parts) == tokenizer.apply_chat_template(CHAT, tokenize=False)


def test_render_preview_styles_loss_tokens(tokenizer) -> None:
    text = render_preview(tokenizer, CHAT, training_chat_template(tokenizer), 512)
    token_count = len(tokenizer.apply_chat_template(CHAT, return_dict=True)["input_ids"])
    assert text.plain.startswith(f"{token_count} tokens, 8 with loss")
    styled = [text.plain[span.start : span.end] for span in text.spans if "green" in str(span.style)]
    assert styled == ['{"category": "billing"}<|im_end|>']
