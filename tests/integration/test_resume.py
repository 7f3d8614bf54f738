"""Checkpoints and exact resume: a real `hone train` process is killed with SIGKILL mid-run, resumed with
`hone train --resume`, and must end bit-identical to a run that was never interrupted."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from hone.config import load_config
from hone.errors import HoneError
from hone.train.checkpoints import COMPLETE, checkpoint_steps
from hone.train.pipeline import resume_training, run_training

REPO = Path(__file__).resolve().parents[2]


def hone(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", "from hone.cli import main; main()", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture
def resume_config(tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]) -> Path:
    path = tmp_path / "resume.yaml"
    path.write_text(
        f"""model: {{reference: "{tiny_model_dir}", max_length: 256}}
data: {{train: {small_task["train"]}, validation: {small_task["validation"]}}}
train:
  adapter: {{kind: lora, r: 4, alpha: 8}}
  learning_rate: 1.0e-3
  max_steps: 16
  batch_size: 2
  eval_every: 4
  logging_steps: 1
run: {{dir: {tmp_path / "runs"}}}
track: {{enabled: false}}
""",
        encoding="utf-8",
    )
    return path


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {path.name} appeared:\n{process.stdout.read()}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_kill_9_then_resume_ends_identical_to_an_uninterrupted_run(
    resume_config: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    whole = run_training(load_config(resume_config, ["run.name=whole"]), Console(record=True))

    process = hone("train", "-c", str(resume_config), "run.name=killed")
    killed = runs / "killed"
    wait_for(killed / "checkpoints" / "checkpoint-4" / COMPLETE, process)
    process.kill()  # SIGKILL: no handler runs, nothing is flushed
    process.wait(timeout=30)
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"
    last = max(step for step, _, done in checkpoint_steps(killed) if done)
    assert 4 <= last < 16
    # A checkpoint the kill interrupted mid-write: files present, no completion mark.
    torn = killed / "checkpoints" / f"checkpoint-{last + 4}"
    torn.mkdir(exist_ok=True)
    (torn / "adapter_model.safetensors").write_bytes(b"\0" * 100)
    (torn / COMPLETE).unlink(missing_ok=True)

    resumed = hone("train", "--resume", str(killed))
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"Resuming killed from checkpoint-{last}" in output
    assert f"removed checkpoint-{last + 4}" in output

    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["training"]["steps"] == 16
    assert manifest["resumed_from"] == f"checkpoint-{last}"
    history = [json.loads(line) for line in (killed / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history if "loss" in row] == list(range(1, 17))

    # Same optimizer, schedule, RNG and data order: the weights match to the bit.
    expected = load_file(whole.path / "adapter" / "adapter_model.safetensors")
    actual = load_file(killed / "adapter" / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_resume_refuses_a_completed_run_and_changed_data(
    resume_config: Path, small_task: dict[str, Path]
) -> None:
    config = load_config(resume_config, ["run.name=short", "train.max_steps=2"])
    run = run_training(config, Console(record=True))
    with pytest.raises(HoneError, match="already completed"):
        resume_training(run.path, Console(record=True))
    run.update(status="failed")
    with small_task["train"].open("a", encoding="utf-8") as handle:
        handle.write(small_task["train"].read_text(encoding="utf-8").splitlines()[0] + "\n")
    with pytest.raises(HoneError, match="training data changed"):
        resume_training(run.path, Console(record=True))


def test_resume_skips_a_damaged_newest_checkpoint_for_the_previous_complete_one(resume_config: Path) -> None:
    config = load_config(resume_config, ["run.name=damaged", "train.max_steps=8", "train.save_every=4"])
    run = run_training(config, Console(record=True))
    uninterrupted = load_file(run.path / "adapter" / "adapter_model.safetensors")
    assert [(step, done) for step, _, done in checkpoint_steps(run.path)] == [(4, True), (8, True)]
    run.update(status="failed", error="stopped")  # as a run stopped after its last checkpoint is left
    optimizer = run.path / "checkpoints" / "checkpoint-8" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:1000])  # marked complete, then cut short

    resumed = hone("train", "--resume", str(run.path))
    output, _ = resumed.communicate(timeout=300)

    assert resumed.returncode == 0, output
    assert "skipped and removed checkpoint-8: optimizer.pt is 1000 bytes;" in output
    assert "Resuming damaged from checkpoint-4" in output
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["status"] == "completed" and "error" not in manifest
    assert manifest["resumed_from"] == "checkpoint-4" and manifest["training"]["steps"] == 8
    assert json.loads((run.path / "checkpoints" / "checkpoint-8" / COMPLETE).read_text())["step"] == 8
    resumed_weights = load_file(run.path / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(uninterrupted[name], resumed_weights[name]) for name in uninterrupted)


def off_task_validation(path: Path) -> Path:
    """Answers of random words: the more the model learns the task, the worse it predicts them."""
    rng = random.Random(0)
    words = [
        "zebra",
        "quantum",
        "lilac",
        "obelisk",
        "fjord",
        "marzipan",
        "quasar",
        "tundra",
        "xylophone",
        "gazebo",
    ]
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Say something."},
                {"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(12))},
            ]
        }
        for _ in range(8)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_early_stopping_keeps_the_best_checkpoint(resume_config: Path, tmp_path: Path) -> None:
    config = load_config(
        resume_config,
        [
            "run.name=early",
            f"data.validation={off_task_validation(tmp_path / 'off-task.jsonl')}",
            "train.learning_rate=0.05",
            "train.early_stopping_patience=2",
            "train.eval_every=2",
            "train.warmup_ratio=0",
        ],
    )
    run = run_training(config, Console(record=True))
    training = run.manifest.training
    history = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    evals = {row["step"]: row["eval_loss"] for row in history if "eval_loss" in row}
    best = min(evals, key=evals.get)
    assert training.steps < 16, "stopped early"
    assert training.steps == best + 2 * 2, "after two validations without improvement"
    assert training.best_step == best
    assert training.eval_loss == pytest.approx(evals[best])
    saved = load_file(run.path / "adapter" / "adapter_model.safetensors")
    kept = load_file(run.path / "checkpoints" / f"checkpoint-{best}" / "adapter_model.safetensors")
    assert all(torch.equal(saved[name], kept[name]) for name in saved), "the final weights are the best ones"
