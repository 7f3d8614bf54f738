"""A run whose loss or gradient turns NaN or infinite stops there and is recorded failed, through the
real `hone train` on the tiny model; no run trains on garbage to the end and calls itself completed."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

from hone.cli import main
from hone.train.finite import non_finite


def test_non_finite_names_each_bad_figure() -> None:
    logs = {"loss": math.nan, "grad_norm": math.inf, "eval_loss": 1.5, "learning_rate": math.inf}
    assert non_finite(logs, fp16=False) == ["loss is nan", "grad_norm is inf"]
    assert non_finite(logs, fp16=True) == ["loss is nan"], "fp16's loss scaler overflows on purpose"
    assert non_finite({"loss": 2.0, "grad_norm": 0.5, "train_loss": -math.inf}, fp16=False) == [
        "train_loss is -inf"
    ]
    assert non_finite({"loss": 2.0, "grad_norm": 0.5}, fp16=False) == []


def test_a_diverging_run_stops_with_the_step_and_is_recorded_failed(
    tmp_path: Path,
    tiny_model_dir: Path,
    small_task: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "diverge.yaml"
    config.write_text(
        f"model: {{reference: {tiny_model_dir}, max_length: 256}}\n"
        f"data: {{train: {small_task['train']}}}\n"
        "train: {max_steps: 8, batch_size: 2, logging_steps: 1, precision: fp32}\n"
        f"run: {{name: diverged, dir: {tmp_path / 'runs'}}}\n"
        "track: {enabled: false}\n",
        encoding="utf-8",
    )
    # Finite, so the config accepts it; AdamW's first step moves each weight by about 1e30.
    monkeypatch.setattr(sys, "argv", ["hone", "train", "-c", str(config), "train.learning_rate=1e30"])
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in message
    assert "Lower train.learning_rate (it is 1e+30)" in message, message
    step = int(message.split("training diverged at step ")[1].split(":")[0])
    assert 1 <= step < 8, "stopped at the first logged NaN, not at the end"
    run = tmp_path / "runs" / "diverged"
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "failed"
    assert re.search(rf"training diverged at step {step}: loss is -?(nan|inf)", manifest["error"])
    assert not (run / "adapter").exists(), "no weights are saved from a diverged run"
