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


def apply_turn_weights(mask: list[int], messages: list[dict[str, Any]]) -> list[int]:
    """Clear the mask of assistant turns with weight 0 (OpenAI's `weight`: context only, no loss).

    The k-th run of masked tokens is the k-th assistant turn: the template marks each assistant reply
    (with its end-of-turn token) as one contiguous generation block, and nothing else.
    """
    weights = [m.get("weight", 1) for m in messages if m["role"] == "assistant"]
    if all(weight != 0 for weight in weights):
        return mask
    result = list(mask)
    turn = -1
    for index, keep in enumerate(mask):
        if keep and (index == 0 or not mask[index - 1]):
            turn += 1
        if keep and turn < len(weights) and weights[turn] == 0:
            result[index] = 0
    return result


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
    mask = apply_turn_weights(list(encoded["assistant_masks"]), messages)
    labels = assistant_labels(input_ids, mask)
    truncated = len(input_ids) > max_length
    return TokenizedChat(input_ids[:max_length], labels[:max_length], truncated)


def prompt_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation up to (not including) the final assistant answer: what a model is asked."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else list(messages)
