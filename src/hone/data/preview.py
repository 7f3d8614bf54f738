"""Show examples exactly as the model will be trained on them, with the tokens that carry loss marked.

Masking bugs (loss on the prompt, no loss on the end-of-turn token, a template that drops a turn) are
silent in training and obvious on screen; this is the screen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text

from hone.data.tokenize import IGNORE_INDEX, TokenizedChat, tokenize_chat

LOSS_STYLE = "bold green on grey15"
PROMPT_STYLE = "grey62"


@dataclass
class PreviewSegment:
    text: str
    has_loss: bool


def segments(tokenizer: Any, tokenized: TokenizedChat) -> list[PreviewSegment]:
    """Consecutive tokens grouped by whether they carry loss, decoded together (keeps multi-byte text)."""
    groups: list[PreviewSegment] = []
    run: list[int] = []
    run_has_loss: bool | None = None
    for token, label in zip(tokenized.input_ids, tokenized.labels, strict=True):
        has_loss = label != IGNORE_INDEX
        if run and has_loss != run_has_loss:
            groups.append(PreviewSegment(tokenizer.decode(run), bool(run_has_loss)))
            run = []
        run.append(token)
        run_has_loss = has_loss
    if run:
        groups.append(PreviewSegment(tokenizer.decode(run), bool(run_has_loss)))
    return groups


def render_preview(tokenizer: Any, messages: list[dict[str, str]], template: str, max_length: int) -> Text:
    """The rendered training text, loss tokens highlighted, with a one-line token count header."""
    tokenized = tokenize_chat(tokenizer, messages, template, max_length)
    text = Text()
    for segment in segments(tokenizer, tokenized):
        text.append(segment.text, style=LOSS_STYLE if segment.has_loss else PROMPT_STYLE)
    header = Text(
        f"{len(tokenized.input_ids)} tokens, {tokenized.loss_tokens} with loss"
        + (" (truncated)" if tokenized.truncated else "")
        + "\n",
        style="bold",
    )
    return header + text


def preview_examples(config: Any, count: int, console: Any) -> None:
    """Print the first `count` train examples as rendered for training (chat and preference pairs)."""
    from hone.data.formats import load_examples
    from hone.data.sources import read_all
    from hone.errors import HoneError
    from hone.models.resolve import load_tokenizer, resolve_model
    from hone.models.templates import training_chat_template

    records, errors = read_all(config.data.train)
    examples, format_errors = load_examples(
        records[: max(count * 4, count)], system_prompt=config.data.system_prompt
    )
    if errors or format_errors:
        raise HoneError("\n".join((errors + format_errors)[:20]))
    tokenizer = load_tokenizer(resolve_model(config.model.reference), config.model)
    template = training_chat_template(tokenizer)
    if template is None:
        raise HoneError(f"model {config.model.reference}: no training-compatible chat template")
    for example in examples[:count]:
        console.rule(f"{example.source} line {example.line} ({example.kind})")
        messages = [{"role": m["role"], "content": m["content"]} for m in example.messages]
        if example.kind == "preference":
            messages = messages + [dict(m) for m in example.chosen or []]
            console.print("[dim]chosen reply shown; the rejected one is rendered the same way[/]")
        if example.kind == "text":
            console.print(Text(example.text or "", style=LOSS_STYLE))
            continue
        console.print(render_preview(tokenizer, messages, template, config.model.max_length))
