from __future__ import annotations

import pytest

from hone.data.tokenize import IGNORE_INDEX, tokenize_chat
from hone.models.templates import (
    PROBE_CHATS,
    has_generation_markers,
    load_template,
    renders_identically,
    training_chat_template,
)

CHATS = [
    *PROBE_CHATS,
    [
        {"role": "user", "content": "Ticket: refund please"},
        {"role": "assistant", "content": '{"category": "billing"}'},
        {"role": "user", "content": "And the priority?"},
        {"role": "assistant", "content": "urgent"},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You're welcome.\nBye."},
    ],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "ü ñ 中文"}],
]


@pytest.fixture(scope="module")
def template(tokenizer) -> str:
    found = training_chat_template(tokenizer)
    assert found is not None
    return found


def test_smollm2_gets_the_marked_template(tokenizer, template: str) -> None:
    assert not has_generation_markers(tokenizer.chat_template)
    assert has_generation_markers(template)


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_renders_byte_identically_to_the_stock_template(
    tokenizer, template, chat, add_generation_prompt
) -> None:
    options = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
    stock = tokenizer.apply_chat_template(chat, **options)
    marked = tokenizer.apply_chat_template(chat, chat_template=template, **options)
    assert marked == stock


def labelled_runs(input_ids: list[int], labels: list[int]) -> list[list[int]]:
    """Consecutive stretches of tokens that carry loss."""
    runs, current = [], []
    for token, label in zip(input_ids, labels, strict=True):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    return runs + ([current] if current else [])


@pytest.mark.parametrize("chat", [c for c in CHATS if c[-1]["role"] == "assistant"])
def test_loss_covers_each_assistant_turn_and_its_end_token_only(tokenizer, template, chat) -> None:
    tokenized = tokenize_chat(tokenizer, chat, template, max_length=4096)
    runs = labelled_runs(tokenized.input_ids, tokenized.labels)
    replies = [m["content"] for m in chat if m["role"] == "assistant"]
    assert len(runs) == len(replies)
    for run, reply in zip(runs, replies, strict=True):
        assert tokenizer.decode(run) == reply + "<|im_end|>"
        assert run[-1] == tokenizer.eos_token_id
    user_text = "".join(m["content"] for m in chat if m["role"] != "assistant")
    for run in runs:
        assert "<|im_start|>" not in tokenizer.decode(run)
    assert not tokenized.truncated
    assert user_text  # the chats have prompts, none of which is labelled (checked by the run count above)


def test_truncation_is_reported(tokenizer, template) -> None:
    tokenized = tokenize_chat(tokenizer, CHATS[0], template, max_length=5)
    assert tokenized.truncated and len(tokenized.input_ids) == 5


def test_template_already_marked_is_used_as_is(tokenizer) -> None:
    marked = load_template("smollm2-chatml.training.jinja")

    class Marked:
        chat_template = marked

    assert training_chat_template(Marked()) == marked


def test_no_template_or_unknown_template_gives_none(tokenizer) -> None:
    class NoTemplate:
        chat_template = None

    assert training_chat_template(NoTemplate()) is None
    other = tokenizer.chat_template.replace("You are a helpful AI assistant", "You are a pirate")
    assert not renders_identically(tokenizer, load_template("smollm2-chatml.training.jinja"), other)


def test_weight_zero_turns_carry_no_loss(tokenizer, template) -> None:
    chat = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "first", "weight": 0},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "second", "weight": 1},
    ]
    tokenized = tokenize_chat(tokenizer, chat, template, max_length=512)
    runs = labelled_runs(tokenized.input_ids, tokenized.labels)
    assert [tokenizer.decode(run) for run in runs] == ["second<|im_end|>"]
