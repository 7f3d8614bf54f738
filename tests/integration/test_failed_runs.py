"""A run that fails after its folder exists says so: a real `hone` process whose model does not load, or
that is stopped with SIGTERM mid-training, leaves `status: failed` with the error, never `running`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hone.train.checkpoints import COMPLETE

REPO = Path(__file__).resolve().parents[2]


def hone(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", "from hone.cli import main; main()", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def write_config(tmp_path: Path, model: Path, task: dict[str, Path], max_steps: int) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        f"""model: {{reference: "{model}", max_length: 256}}
data: {{train: {task["train"]}, validation: {task["validation"]}, test: {task["test"]}}}
train: {{adapter: {{kind: lora, r: 4, alpha: 8}}, max_steps: {max_steps}, batch_size: 2, eval_every: 2}}
evaluate: {{max_new_tokens: 4, rungs: [zero-shot]}}
run: {{dir: {tmp_path / "runs"}, name: stopped}}
track: {{enabled: false}}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def broken_model(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A model folder that looks right (config.json, tokenizer) but whose weights are garbage."""
    folder = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors at all" * 100)
    return folder


def manifest(run: Path) -> dict[str, object]:
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_model_that_does_not_load_fails_the_run_with_exit_2(
    tmp_path: Path, broken_model: Path, small_task: dict[str, Path], command: str
) -> None:
    config = write_config(tmp_path, broken_model, small_task, max_steps=2)

    process = hone(command, "-c", str(config))
    out, err = process.communicate(timeout=300)

    assert process.returncode == 2, out + err
    assert f"error: {broken_model}: the model does not load (SafetensorError" in err
    assert "Traceback" not in err
    recorded = manifest(tmp_path / "runs" / "stopped")
    assert recorded["kind"] == ("training" if command == "train" else "evaluation")
    assert recorded["status"] == "failed" and recorded["finished_at"]
    assert f"{broken_model}: the model does not load" in str(recorded["error"])


def test_sigterm_mid_training_fails_the_run(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    config = write_config(tmp_path, tiny_model_dir, small_task, max_steps=10_000)
    run = tmp_path / "runs" / "stopped"
    process = hone("train", "-c", str(config))
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "checkpoint-2" / COMPLETE).exists():  # training is under way
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)

    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)

    assert process.returncode == 128 + signal.SIGTERM, out + err
    recorded = manifest(run)
    assert recorded["status"] == "failed"
    assert recorded["error"] == "Terminated: terminated by SIGTERM"
    assert "Traceback" not in err


def test_step_checkpoints_with_epoch_validation_fail_before_training(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    """keep_best chooses among checkpoints by validation loss; validation once per epoch cannot rank
    checkpoints saved every N steps, so the combination is refused with the fix, before any step."""
    config = write_config(tmp_path, tiny_model_dir, small_task, max_steps=4)
    process = hone("train", "-c", str(config), "train.eval_every=null", "train.save_every=2")
    out, err = process.communicate(timeout=300)

    assert process.returncode == 2, out + err
    assert "train.save_every 2 with a validation split needs train.eval_every" in err
    assert "Traceback" not in err
    run = tmp_path / "runs" / "stopped"
    assert manifest(run)["status"] == "failed"
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
