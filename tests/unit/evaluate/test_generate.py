from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hone.evaluate.generate as generate
from hone.evaluate.generate import budgeted_batches, generate_chat


def test_batches_keep_the_order_and_respect_both_limits() -> None:
    sizes = {0: 1, 1: 2, 2: 3, 3: 5, 4: 8, 5: 20}

    def cost(batch: list[int]) -> int:
        return len(batch) * max(sizes[i] for i in batch)

    batches = budgeted_batches(list(sizes), cost, max_rows=3, budget=10)
    assert [i for batch in batches for i in batch] == list(sizes)  # every index once, in order
    assert batches == [[0, 1, 2], [3], [4], [5]]  # rows <= 3, cost <= 10; a single one may exceed it
    assert budgeted_batches(list(sizes), cost, max_rows=2, budget=1000) == [[0, 1], [2, 3], [4, 5]]
    assert budgeted_batches([], cost, max_rows=2, budget=10) == []


def test_long_prompts_get_smaller_batches_and_the_same_replies(
    tiny_model_dir: Path, tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts = [[{"role": "user", "content": "word " * n}] for n in (2, 3, 40, 41, 42)]
    sizes: list[int] = []
    expected = generate_chat(model, tokenizer, prompts, max_new_tokens=3, batch_size=1)
    longest = max(r.prompt_tokens for r in expected)
    monkeypatch.setattr(generate, "BATCH_TOKENS", 2 * (longest + 3))  # two of the long ones per batch
    replies = generate_chat(model, tokenizer, prompts, max_new_tokens=3, batch_size=8, on_batch=sizes.append)
    # the short ones together, the long ones split
    assert sum(sizes) == 5 and max(sizes) >= 2 and len(sizes) >= 3
    assert [r.text for r in replies] == [r.text for r in expected]
    assert [r.prompt_tokens for r in replies] == [r.prompt_tokens for r in expected]
