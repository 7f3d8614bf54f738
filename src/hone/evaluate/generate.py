"""Batched greedy generation for evaluation: left padding, KV cache, prompts sorted by length.

Sorting by length keeps padding (wasted compute) small inside each batch; results are returned in the
caller's order. A batch holds at most `batch_size` prompts and at most BATCH_TOKENS tokens of prompt plus
new tokens (its KV cache), so batches of long prompts hold fewer: large batches generate faster (each
decoding step reads the weights once for every row) without the memory of long prompts growing with them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Tokens (rows x (longest prompt + max_new_tokens)) of one generation batch: 64 rows of 512.
BATCH_TOKENS = 1 << 15


def budgeted_batches(
    order: Sequence[int], cost: Callable[[list[int]], int], max_rows: int, budget: int
) -> list[list[int]]:
    """Consecutive runs of `order` of at most `max_rows` whose `cost` stays within `budget` (a run of one
    may exceed it: every index gets a batch)."""
    batches: list[list[int]] = []
    for index in order:
        last = batches[-1] if batches else None
        if last is not None and len(last) < max_rows and cost([*last, index]) <= budget:
            last.append(index)
        else:
            batches.append([index])
    return batches


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall time of the batch it was generated in, shared by its members


def encode_chat(tokenizer: Any, prompts: Sequence[list[dict[str, str]]]) -> list[list[int]]:
    """The token ids of each chat prompt, up to the assistant's turn, as every engine is given them."""
    rendered = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]


def generate_chat(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict[str, str]]],
    max_new_tokens: int = 96,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Greedy replies to each chat prompt (messages ending before the assistant's turn)."""
    encoded = encode_chat(tokenizer, prompts)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: list[Generation | None] = [None] * len(encoded)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    model.eval()

    def cost(batch: list[int]) -> int:
        return len(batch) * (max(len(encoded[i]) for i in batch) + max_new_tokens)

    for batch in budgeted_batches(order, cost, batch_size, BATCH_TOKENS):
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            ids = encoded[index]
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        began = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        seconds = time.perf_counter() - began
        for row, index in enumerate(batch):
            new_tokens = output[row, width:].tolist()
            if tokenizer.eos_token_id in new_tokens:
                new_tokens = new_tokens[: new_tokens.index(tokenizer.eos_token_id) + 1]
            text = tokenizer.decode(new_tokens, skip_special_tokens=True)
            results[index] = Generation(text, len(encoded[index]), len(new_tokens), seconds)
        if on_batch:
            on_batch(len(batch))
    return [item for item in results if item is not None]
