"""Batches of similar length (`train.group_by_length`): real training steps on the tiny model, the batches
counted as the trainer's data loader builds them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from transformers import TrainerCallback

from hone.config import HoneConfig
from hone.train.pipeline import run_training


class PaddingSpy(TrainerCallback):
    """(positions, tokens) of every training batch, from the data loader's collate function."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.sampler = ""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        loader = getattr(kwargs["train_dataloader"], "base_dataloader", kwargs["train_dataloader"])
        self.sampler = type(loader.batch_sampler.sampler).__name__
        collate = loader.collate_fn

        def counting(rows: list[dict[str, Any]]) -> dict[str, Any]:
            batch = collate(rows)
            self.batches.append((batch["input_ids"].numel(), int(batch["attention_mask"].sum())))
            return batch

        loader.collate_fn = counting

    def padding_share(self) -> float:
        return 1 - sum(tokens for _, tokens in self.batches) / sum(positions for positions, _ in self.batches)


def chats_of_mixed_length(count: int) -> list[dict[str, Any]]:
    """Questions from 2 to 60 words in a shuffled order, so random batches mix short and long ones."""
    order = [(i * 29) % count for i in range(count)]
    return [
        {
            "messages": [
                {"role": "user", "content": " ".join(["ticket"] * (2 + 58 * n // count))},
                {"role": "assistant", "content": f"answer {n}"},
            ]
        }
        for n in order
    ]


def train(tmp_path: Path, model: Path, grouped: bool) -> PaddingSpy:
    from hone.train import sft

    data = tmp_path / f"train-{grouped}.jsonl"
    data.write_text("".join(json.dumps(chat) + "\n" for chat in chats_of_mixed_length(48)), encoding="utf-8")
    config = HoneConfig.model_validate(
        {
            "model": {"reference": str(model), "max_length": 256},
            "data": {"train": str(data)},
            "train": {
                "adapter": {"kind": "lora", "r": 4, "alpha": 8},
                "max_steps": 4,
                "batch_size": 4,
                "group_by_length": grouped,
                "padding_free": False,  # padded batches, whose padding grouping saves
            },
            "run": {"name": f"grouped-{grouped}", "dir": str(tmp_path / "runs")},
            "track": {"enabled": False},
        }
    )
    spy = PaddingSpy()
    shared = sft.callbacks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sft, "callbacks", lambda *args: [*shared(*args), spy])
        run = run_training(config, Console(record=True, width=160))
    assert run.manifest.status == "completed"
    return spy


def test_batches_of_similar_length_carry_less_padding_than_random_ones(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    grouped = train(tmp_path, tiny_model_dir, grouped=True)
    drawn = train(tmp_path, tiny_model_dir, grouped=False)
    assert (grouped.sampler, drawn.sampler) == ("LengthGroupedSampler", "SeedableRandomSampler")
    assert len(grouped.batches) >= 4 and len(drawn.batches) >= 4
    # 48 examples in batches of 4: mega-batches of 12 sorted by length, so neighbours differ by ~4%
    assert drawn.padding_share() > 0.2
    assert grouped.padding_share() < drawn.padding_share() / 2.5


def test_the_training_rows_carry_their_lengths_for_the_sampler(tokenizer: Any) -> None:
    from hone.train.sft import rows_dataset

    rows = [{"input_ids": [1] * n, "labels": [-100] * n} for n in (3, 9, 5)]
    assert rows_dataset(rows, 16, packing=False)["length"] == [3, 9, 5]
    assert "length" not in rows_dataset(rows, 16, packing=True).column_names
