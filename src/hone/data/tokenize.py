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


def truncate(input_ids: list[int], labels: list[int], max_length: int, policy: str) -> TokenizedChat:
    """Apply the truncation policy: keep_start cuts the end, keep_end cuts the start (keeping the answer).

    `drop` keeps the example whole but flagged; the caller leaves flagged examples out.
    """
    if len(input_ids) <= max_length:
        return TokenizedChat(input_ids, labels, truncated=False)
    if policy == "keep_end":
        return TokenizedChat(input_ids[-max_length:], labels[-max_length:], truncated=True)
    if policy == "drop":
        return TokenizedChat(input_ids, labels, truncated=True)
    return TokenizedChat(input_ids[:max_length], labels[:max_length], truncated=True)


def tokenize_text(tokenizer: Any, text: str, max_length: int, policy: str = "keep_start") -> TokenizedChat:
    """A document for continued pre-training: every token carries loss, and so does the closing EOS."""
    input_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return truncate(input_ids, list(input_ids), max_length, policy)


def tokenize_chat(
    tokenizer: Any,
    messages: list[dict[str, str]],
    chat_template: str,
    max_length: int,
    policy: str = "keep_start",
) -> TokenizedChat:
    """Render with the training template and keep the assistant mask, then apply the truncation policy."""
    encoded = tokenizer.apply_chat_template(
        messages,
        chat_template=chat_template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    input_ids = list(encoded["input_ids"])
    mask = apply_turn_weights(list(encoded["assistant_masks"]), messages)
    return truncate(input_ids, assistant_labels(input_ids, mask), max_length, policy)


def prompt_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation up to (not including) the final assistant answer: what a model is asked."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else list(messages)
