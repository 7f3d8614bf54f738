"""Configs on toy preference pairs, shared by the dpo and reward tests (imported as a sibling module)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hone.config import HoneConfig


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
