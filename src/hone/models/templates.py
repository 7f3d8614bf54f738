"""Training-compatible chat templates.

Assistant-only loss needs to know which characters of the rendered chat the assistant wrote.
transformers finds them through `{% generation %}` markers in the chat template, but most stock
templates (SmolLM2's included) have none. We ship marked copies of known templates and adopt one only
after proving it renders byte-identically to the model's own template on a set of probe chats, so the
model is trained on exactly the text it will see at inference.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")

# Chats that exercise every branch a template usually has: default system prompt, explicit system
# prompt, multi-turn, generation prompt, empty and multi-line content.
PROBE_CHATS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    [
        {"role": "system", "content": "Reply in JSON."},
        {"role": "user", "content": "Two\nlines"},
        {"role": "assistant", "content": '{"a": 1}'},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": ""},
    ],
    [{"role": "user", "content": "  spaced  "}],
    [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
]

TRAINING_TEMPLATES = ("smollm2-chatml.training.jinja",)


def load_template(name: str) -> str:
    return resources.files("hone.models").joinpath("templates", name).read_text(encoding="utf-8")


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and bool(GENERATION_MARKER.search(template))


def renders_identically(tokenizer: Any, candidate: str, reference: str) -> bool:
    """True when both templates render every probe chat the same, with and without generation prompt."""
    for chat in PROBE_CHATS:
        for add_generation_prompt in (False, True):
            options = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
            expected = tokenizer.apply_chat_template(chat, chat_template=reference, **options)
            if tokenizer.apply_chat_template(chat, chat_template=candidate, **options) != expected:
                return False
    return True


def training_chat_template(tokenizer: Any) -> str | None:
    """The template to train with: the model's own when it is marked, else a proven-identical marked copy.

    Returns None when the model has no chat template or no shipped copy matches it; callers then
    cannot put loss on assistant turns only and must say so.
    """
    stock = getattr(tokenizer, "chat_template", None)
    if not stock:
        return None
    if has_generation_markers(stock):
        return stock
    for name in TRAINING_TEMPLATES:
        candidate = load_template(name)
        if renders_identically(tokenizer, candidate, stock):
            return candidate
    return None
