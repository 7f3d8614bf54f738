"""benchmarks/lora_step.py on the tiny model: every variant is timed, and the ways of computing the loss,
the LoRA forward and attention give the same loss on the same batch and dropout masks."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def test_every_variant_is_timed_and_the_losses_agree(
    tiny_model_dir: Path, benchmark_script: Callable[[str], ModuleType]
) -> None:
    bench = benchmark_script("lora_step")

    variants = list(bench.DEFAULT_VARIANTS)
    result = bench.run(str(tiny_model_dir), variants, steps=1, rounds=2, batch=3)
    assert set(result["seconds_per_step"]) == set(variants)
    assert all(len(times) == 2 and min(times) > 0 for times in result["rounds"].values())
    assert result["hone_speedup"]["hone"] == 1.0
    assert result["batch"][0] == 3 and 0 < result["labelled"] < result["tokens"]
    loss = result["loss"]
    assert all(math.isfinite(value) for value in loss.values())
    tolerance = 2e-2 if result["bf16"] else 1e-5
    different = {"fp32", "torch-dropout"}  # other precision, other dropout masks
    for same in set(variants) - different:  # same masks, same loss
        assert loss[same] == pytest.approx(loss["hone"], rel=tolerance), same
