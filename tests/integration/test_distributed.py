"""`hone train` under `accelerate launch`, unchanged: two CPU processes over gloo with the shipped
data-parallel config in CI, and the GPU configs (DDP, FSDP) where CUDA GPUs are present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def launch(accelerate_config: str, hone_config: Path, processes: int) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs" / "accelerate" / accelerate_config),
        "--num_processes",
        str(processes),
        "-m",
        "hone",
        "train",
        "-c",
        str(hone_config),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def config_file(tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]) -> Path:
    path = tmp_path / "distributed.yaml"
    path.write_text(
        f"""model: {{reference: "{tiny_model_dir}", max_length: 256}}
data: {{train: {small_task["train"]}, validation: {small_task["validation"]}}}
train:
  adapter: {{kind: lora, r: 4, alpha: 8}}
  learning_rate: 1.0e-3
  max_steps: 4
  batch_size: 2
  eval_every: 2
  logging_steps: 1
run: {{name: launched, dir: {tmp_path / "runs"}}}
track: {{enabled: false}}
""",
        encoding="utf-8",
    )
    return path


def finished_run(tmp_path: Path, result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert [run.name for run in runs] == ["launched"], "one run folder, written by the main process only"
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert (runs[0] / "adapter" / "adapter_model.safetensors").is_file()
    return manifest


def test_two_cpu_processes_train_one_run_over_gloo(tmp_path: Path, config_file: Path) -> None:
    manifest = finished_run(tmp_path, launch("ddp.yaml", config_file, 2))
    assert manifest["distributed"] == {"processes": 2, "backend": "gloo"}
    assert manifest["training"]["distributed"] == "MULTI_CPU"
    assert manifest["training"]["steps"] == 4
    history = [json.loads(line) for line in (tmp_path / "runs" / "launched" / "history.jsonl").open()]
    # Each optimizer step saw batch_size x 2 processes examples: 24 examples make 6 steps per epoch.
    assert [round(row["epoch"], 4) for row in history if "loss" in row] == [0.1667, 0.3333, 0.5, 0.6667]


def test_sharding_without_gpus_says_it_needs_them(tmp_path: Path, config_file: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("GPUs present: FSDP runs")
    result = launch("fsdp.yaml", config_file, 2)
    assert result.returncode != 0
    assert "asks for FSDP, which needs CUDA GPUs" in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("accelerate_config", ["ddp.yaml", "fsdp.yaml"])
def test_gpus_train_one_run(tmp_path: Path, config_file: Path, accelerate_config: str) -> None:
    gpus = torch.cuda.device_count()
    manifest = finished_run(tmp_path, launch(accelerate_config, config_file, gpus))
    assert manifest["distributed"]["processes"] == gpus
    expected = "FSDP" if accelerate_config == "fsdp.yaml" else ("MULTI_GPU" if gpus > 1 else "NO")
    assert manifest["training"]["distributed"] == expected
