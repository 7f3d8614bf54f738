"""Turn chats into training tensors: input ids plus labels that carry loss on assistant turns only.

The masks come from the chat template's `{% generation %}` markers (see hone.models.templates), so the
loss covers each assistant reply and its end-of-turn token, and never a prompt token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100


@dataclass
class TokenizedChat:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def loss_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def assistant_labels(input_ids: list[int], assistant_mask: list[int]) -> list[int]:
    """Labels equal to the input id where the assistant wrote the token, IGNORE_INDEX elsewhere."""
    return [token if keep else IGNORE_INDEX for token, keep in zip(input_ids, assistant_mask, strict=True)]


def tokenize_chat(
    tokenizer: Any, messages: list[dict[str, str]], chat_template: str, max_length: int
) -> TokenizedChat:
    """Render with the training template and keep the assistant mask; truncate from the end."""
    encoded = tokenizer.apply_chat_template(
        messages,
        chat_template=chat_template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    input_ids = list(encoded["input_ids"])
    labels = assistant_labels(input_ids, list(encoded["assistant_masks"]))
    truncated = len(input_ids) > max_length
    return TokenizedChat(input_ids[:max_length], labels[:max_length], truncated)


def prompt_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation up to (not including) the final assistant answer: what a model is asked."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else list(messages)
