"""benchmarks/train_throughput.py on the tiny model: every configuration trains, the report has all of them
with positive throughput and a finite validation loss. Runs each configuration in this process (the script
runs each in a fresh one) to stay fast."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def test_report_has_every_configuration(
    tmp_path: Path,
    tiny_model_dir: Path,
    small_task: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    benchmark_script: Callable[[str], ModuleType],
) -> None:
    bench = benchmark_script("train_throughput")

    def in_process(name: str, spec: dict[str, Any], folder: Path) -> dict[str, Any]:
        spec = bench.run_spec(name, spec, folder)
        bench.child(spec)
        return json.loads(Path(spec["result"]).read_text(encoding="utf-8"))

    monkeypatch.setattr(bench, "measure", in_process)
    out = tmp_path / "throughput.json"
    options = ["--model", str(tiny_model_dir), "--steps", "2", "--rounds", "1", "--batch-size", "2"]
    options += ["--train", str(small_task["train"]), "--validation", str(small_task["validation"])]
    bench.main([*options, "--val-examples", "4", "--out", str(out)])

    report = json.loads(out.read_text(encoding="utf-8"))
    assert list(report["median"]) == ["trl-defaults", "trl-tuned", "hone"]
    for median in report["median"].values():
        assert median["tokens_per_second"] > 0
        assert median["labelled_tokens_per_second"] > 0
        assert math.isfinite(median["validation_loss"])
    assert set(report["ratios"]) == {"hone/trl-defaults", "hone/trl-tuned"}
    runs = {name: results[0] for name, results in report["runs"].items()}
    # The same examples in every step, and tuned TRL trains the same model as hone (same labels, same init).
    assert runs["trl-defaults"]["tokens_per_step"] == runs["hone"]["tokens_per_step"]
    assert runs["trl-tuned"]["labelled_per_step"] == runs["hone"]["labelled_per_step"]
    assert runs["trl-defaults"]["labelled_per_step"] > runs["hone"]["labelled_per_step"]  # the whole chat
    assert runs["trl-tuned"]["validation_loss"] == pytest.approx(runs["hone"]["validation_loss"], rel=1e-3)
