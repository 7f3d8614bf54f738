"""Configs on toy preference pairs and the checks of a finished toy run, shared by the dpo and reward tests
(imported as a sibling module)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hone.config import HoneConfig
from hone.runs import RunFolder


def preference_config(
    tmp_path: Path,
    model: Path,
    method: str,
    adapter: str,
    pairs: Callable[[int, int], list[dict[str, Any]]],
    train: int = 4,
    validation: int = 2,
    **settings: Any,
) -> HoneConfig:
    """A dpo or reward config on toy pairs (`pairs(count, first)`), written as train/validation JSONL."""
    paths = {}
    for split, count, first in (("train", train, 0), ("validation", validation, 1000)):
        paths[split] = tmp_path / f"{split}.jsonl"
        rows = pairs(count, first)
        paths[split].write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return HoneConfig.model_validate(
        {
            "model": {"reference": str(model), "max_length": 128},
            "data": {"train": str(paths["train"]), "validation": str(paths["validation"])},
            "train": {
                "method": method,
                "adapter": {"kind": adapter, "r": 4, "alpha": 8} if adapter != "full" else "full",
                "learning_rate": 1e-2 if adapter != "full" else 1e-3,
                "max_steps": 2,  # LoRA A only moves once B is no longer zero, from the second step
                "batch_size": 2,
                "eval_every": 2,
                "warmup_ratio": 0.0,
                "logging_steps": 1,
                **settings,
            },
            "run": {"name": f"{method}-{adapter}", "dir": str(tmp_path / "runs")},
            "track": {"enabled": False},
        }
    )


def completed_two_steps(run: RunFolder, adapter: str) -> list[dict[str, Any]]:
    """Check a 2-step toy run completed with finite losses and its weights where expected; its history."""
    manifest = run.manifest
    assert manifest.status == "completed"
    assert manifest.artifacts["weights"] == ("model" if adapter == "full" else "adapter")
    training = manifest.training
    assert training.steps == 2
    assert math.isfinite(training.train_loss) and math.isfinite(training.eval_loss)
    records = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in records if "loss" in row] == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in records if "loss" in row)
    return records


def assert_saved_as_trained(snapshot: Any, saved: dict[str, torch.Tensor]) -> None:
    """Every trainable parameter changed in training, and the saved weights are the trained ones."""
    unchanged = [name for name, value in snapshot.before.items() if torch.equal(value, snapshot.after[name])]
    assert not unchanged, f"parameters that did not train: {unchanged[:5]}"
    differ = [
        name for name, value in saved.items() if not torch.equal(value.float(), snapshot.after[name].float())
    ]
    assert not differ, f"saved weights that are not the trained ones: {differ[:5]}"
