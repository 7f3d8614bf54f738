"""hone's CUDA paths on the tiny model: training with each attention kernel, evaluation on the GPU, and the
throughput benchmark's MFU. Marked `gpu`: skipped where no CUDA GPU is present (CI)."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest
import torch
from rich.console import Console

from hone.config import HoneConfig
from hone.evaluate.generate import generate_chat
from hone.models.resolve import inference_device, inference_dtype
from hone.models.trained import trained_model
from hone.runs import open_language_model_run
from hone.train.pipeline import run_training

pytestmark = pytest.mark.gpu


def lora_config(tmp_path: Path, model: Path, task: dict[str, Path], **train: object) -> HoneConfig:
    return HoneConfig.model_validate(
        {
            "model": {"reference": str(model), "max_length": 256},
            "data": {"train": str(task["train"]), "validation": str(task["validation"])},
            "train": {
                "adapter": {"kind": "lora", "r": 4, "alpha": 8},
                "learning_rate": 1e-2,
                "max_steps": 3,
                "batch_size": 2,
                "logging_steps": 1,
                **train,
            },
            "run": {"name": "gpu", "dir": str(tmp_path / "runs")},
            "track": {"enabled": False},
        }
    )


@pytest.mark.parametrize(
    ("options", "kernel"),
    [
        ({}, "sdpa"),
        ({"attention": "eager"}, "eager"),
        ({"attention": "flex_attention", "packing": True}, "flex_attention"),
    ],
)
def test_lora_sft_trains_on_the_gpu_with_each_attention_kernel(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path], options: dict[str, object], kernel: str
) -> None:
    run = run_training(lora_config(tmp_path, tiny_model_dir, small_task, **options), Console(width=160))
    training = run.manifest.training
    assert run.manifest.status == "completed"
    assert training.attention == kernel
    assert training.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert math.isfinite(training.train_loss) and math.isfinite(training.eval_loss)


def test_a_trained_run_is_evaluated_on_the_gpu(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    run = run_training(lora_config(tmp_path, tiny_model_dir, small_task), Console(width=160))
    assert inference_device() == "cuda"
    dtype = inference_dtype("auto", "cuda")
    model, tokenizer = trained_model(open_language_model_run(run.path, "candidate"), dtype, "cuda")
    assert {p.device.type for p in model.parameters()} == {"cuda"} and next(model.parameters()).dtype == dtype
    prompts = [[{"role": "user", "content": "Say hello."}]] * 3
    replies = generate_chat(model, tokenizer, prompts, max_new_tokens=4, batch_size=2)
    assert len(replies) == 3 and all(r.completion_tokens > 0 for r in replies)


def test_the_throughput_benchmark_reports_mfu_on_the_gpu(
    tiny_model_dir: Path, small_task: dict[str, Path], bench: ModuleType
) -> None:
    options = ["--model", str(tiny_model_dir), "--steps", "3", "--rounds", "1", "--batch-size", "2"]
    options += ["--train", str(small_task["train"]), "--validation", str(small_task["validation"])]
    report = bench.main([*options, "--val-examples", "2", "--configs", "trl-tuned", "hone"])
    for median in report["median"].values():
        assert median["model_tflops"] > 0
        if bench.peak_flops(torch.cuda.get_device_name(0)):
            assert 0 < median["mfu"] < 1
