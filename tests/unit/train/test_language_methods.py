"""SFT and continued pre-training, each as full, LoRA and QLoRA: a few real steps on the tiny model
through `hone train`'s pipeline, and every trainable parameter must have moved (TRL's test pattern)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from transformers import TrainerCallback

from hone.config import HoneConfig
from hone.train import hardware
from hone.train.pipeline import run_training
from hone.train.setup import Setup, build_model

KNOWLEDGE = Path(__file__).resolve().parents[3] / "examples" / "support-tickets" / "knowledge"


def config_for(
    tmp_path: Path, model: Path, method: str, adapter: str, train: Path, validation: Path
) -> HoneConfig:
    return HoneConfig.model_validate(
        {
            "model": {"reference": str(model), "max_length": 256},
            "data": {"train": str(train), "validation": str(validation)},
            "train": {
                "method": method,
                "adapter": {"kind": adapter, "r": 4, "alpha": 8} if adapter != "full" else "full",
                "learning_rate": 1e-2,
                "max_steps": 3,
                "batch_size": 2,
                "eval_every": 3,
                "logging_steps": 1,
            },
            "run": {"name": f"{method}-{adapter}", "dir": str(tmp_path / "runs")},
            "track": {"enabled": False},
        }
    )


def sft_lora(tmp_path: Path, model: Path, task: dict[str, Path]) -> HoneConfig:
    return config_for(tmp_path, model, "sft", "lora", task["train"], task["validation"])


def initial_trainable(config: HoneConfig, model_path: Path) -> dict[str, torch.Tensor]:
    """The trainable weights before training, keyed as they are saved (the seed makes them reproducible)."""
    setup = Setup(
        {
            "device": hardware.Choice("cpu", ""),
            "precision": hardware.Choice("fp32", ""),
            "gradient checkpointing": hardware.Choice(False, ""),
            "learning rate": hardware.Choice(1e-2, ""),
            "attention": hardware.Choice(hardware.CPU_ATTENTION, ""),
        }
    )
    model = build_model(config, model_path, setup)
    if config.train.adapter.kind == "full":
        return {name: value.clone() for name, value in model.state_dict().items()}
    from peft import get_peft_model_state_dict

    return {name: value.clone() for name, value in get_peft_model_state_dict(model).items()}


def assert_all_trained(run_path: Path, before: dict[str, torch.Tensor], adapter: str) -> None:
    file = "model/model.safetensors" if adapter == "full" else "adapter/adapter_model.safetensors"
    after = load_file(run_path / file)
    assert after, "weights were saved"
    unchanged = [name for name, value in after.items() if torch.equal(value, before[name].to(value.dtype))]
    assert not unchanged, f"parameters that did not train: {unchanged[:5]}"


@pytest.mark.parametrize("adapter", ["full", "lora", "qlora"])
def test_sft_trains_every_parameter(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path], adapter: str
) -> None:
    config = config_for(
        tmp_path, tiny_model_dir, "sft", adapter, small_task["train"], small_task["validation"]
    )
    before = initial_trainable(config, tiny_model_dir)
    run = run_training(config, Console(record=True, width=160))
    manifest = run.manifest
    assert manifest.status == "completed"
    assert manifest.training.steps == 3
    assert math.isfinite(manifest.training.train_loss)
    assert math.isfinite(manifest.training.eval_loss)
    assert_all_trained(run.path, before, adapter)


@pytest.mark.parametrize("adapter", ["full", "lora", "qlora"])
def test_pretrain_trains_every_parameter_on_documents(
    tmp_path: Path, tiny_model_dir: Path, adapter: str
) -> None:
    pages = sorted(KNOWLEDGE.glob("*.md"))
    validation = tmp_path / "held-out.md"
    validation.write_text(pages[-1].read_text(encoding="utf-8"), encoding="utf-8")
    config = config_for(tmp_path, tiny_model_dir, "pretrain", adapter, KNOWLEDGE, validation)
    before = initial_trainable(config, tiny_model_dir)
    run = run_training(config, Console(record=True, width=160))
    manifest = run.manifest
    assert manifest.status == "completed"
    assert manifest.dataset.splits["train"].examples == len(pages)
    assert math.isfinite(manifest.training.train_loss)
    assert_all_trained(run.path, before, adapter)


def test_pretrain_windows_cover_every_token(tokenizer) -> None:
    from hone.train.pretrain import document_windows

    text = " ".join(f"word{i}" for i in range(300))
    windows = document_windows(tokenizer, text, 64)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert [token for window in windows for token in window] == ids
    assert all(len(window) <= 64 for window in windows[:-1]) and len(windows) == math.ceil(len(ids) / 64)


def test_method_refuses_the_wrong_kind_of_data(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    from hone.errors import HoneError

    config = config_for(
        tmp_path, tiny_model_dir, "pretrain", "lora", small_task["train"], small_task["validation"]
    )
    with pytest.raises(HoneError, match=r"train.jsonl line 1: method 'pretrain' trains on text examples"):
        run_training(config, Console(record=True))
    assert not (tmp_path / "runs").exists(), "nothing is written before the data is accepted"


def test_history_records_loss_and_validation(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    config = config_for(
        tmp_path, tiny_model_dir, "sft", "lora", small_task["train"], small_task["validation"]
    )
    run = run_training(config, Console(record=True))
    history = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history if "loss" in row] == [1, 2, 3]
    assert any("eval_loss" in row for row in history)


def test_report_to_tensorboard_writes_events_into_the_run_folder(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    config = config_for(
        tmp_path, tiny_model_dir, "sft", "lora", small_task["train"], small_task["validation"]
    )
    config.train.report_to = ["tensorboard"]
    run = run_training(config, Console(record=True))
    events = list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_report_to_an_unknown_logger_fails_before_training(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    from hone.errors import HoneError

    config = config_for(
        tmp_path, tiny_model_dir, "sft", "lora", small_task["train"], small_task["validation"]
    )
    config.train.report_to = ["carrier-pigeon"]
    with pytest.raises(HoneError, match=r"train\.report_to: unknown logger 'carrier-pigeon'"):
        run_training(config, Console(record=True))
    assert not (tmp_path / "runs").exists()
    config.train.report_to = []
    config.train.attention = "flex_attention"
    if torch.cuda.is_available():
        return  # flex attention trains there
    with pytest.raises(HoneError, match="flex_attention trains only on CUDA") as error:
        run_training(config, Console(record=True))
    assert error.value.exit_code == 2 and not (tmp_path / "runs").exists()


class KernelSpy(TrainerCallback):
    """What the model runs while training: its attention implementation and its replaced forwards."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.model: Any = None

    @staticmethod
    def kernels(model: Any) -> tuple[str, int]:
        """(attention implementation, LoRA layers, norms and MLPs whose forward is replaced)."""
        kinds = ("Linear", "RMSNorm", "MLP")  # accelerate also wraps the top model's forward: not counted
        replaced = sum("forward" in vars(m) and type(m).__name__.endswith(kinds) for m in model.modules())
        return model.get_base_model().config._attn_implementation, replaced

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.model = model
        self.seen.append(self.kernels(model))


def test_cpu_training_runs_hone_s_kernels_and_hands_back_plain_modules(
    tmp_path: Path,
    tiny_model_dir: Path,
    small_task: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hone.train import sft
    from hone.train.cpu import compiled as compiled_ops

    spy = KernelSpy()
    shared = sft.callbacks
    monkeypatch.setattr(sft, "callbacks", lambda *args: [*shared(*args), spy])
    config = sft_lora(tmp_path, tiny_model_dir, small_task)
    run = run_training(config, Console(record=True, width=160))
    assert run.manifest.status == "completed"
    lora_layers = 7 * 2  # every linear layer of the two blocks
    fused = 2 * 2 + 1 + 2 if compiled_ops.inductor_works() else 0  # norms and MLPs
    assert spy.seen and all(seen == ("hone_cpu", lora_layers + fused) for seen in spy.seen)
    assert KernelSpy.kernels(spy.model) == ("sdpa", 0)  # as transformers and PEFT made it
    assert run.manifest.training.attention == "hone_cpu"
    assert run.manifest.training.layout == "padding-free"
    compiled = ["compiled_ops"] if compiled_ops.inductor_works() else []
    ran = ["fast_dropout", "fused_lora", "attention", "rotary", *compiled]
    assert run.manifest.training.cpu_kernels == ran


def test_padding_free_and_padded_runs_count_the_same_trained_tokens(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    """A padding-free row has no padding to leave out: every position counts, also those whose token is the
    pad token (end-of-turn for many tokenizers), as the padded run counts them through its attention mask."""
    training = {}
    for free in (True, False):
        config = sft_lora(tmp_path / str(free), tiny_model_dir, small_task)
        config.train.padding_free = free
        training[free] = run_training(config, Console(quiet=True)).manifest.training
    assert training[True].layout == "padding-free" and training[False].layout == "padded"
    assert training[True].trained_tokens == training[False].trained_tokens > 0
    assert training[True].train_loss == pytest.approx(training[False].train_loss, rel=1e-3)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_an_attention_kernel_named_in_the_config_is_the_one_that_trains(
    tmp_path: Path,
    tiny_model_dir: Path,
    small_task: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    attention: str,
) -> None:
    from hone.train import sft
    from hone.train.cpu import compiled as compiled_ops

    spy = KernelSpy()
    shared = sft.callbacks
    monkeypatch.setattr(sft, "callbacks", lambda *args: [*shared(*args), spy])
    config = sft_lora(tmp_path, tiny_model_dir, small_task)
    config.train.attention = attention  # type: ignore[assignment]
    console = Console(record=True, width=160)
    run = run_training(config, console)
    assert run.manifest.training.attention == attention
    assert run.manifest.training.layout == "padded"  # transformers' kernels would mask the whole row
    assert math.isfinite(run.manifest.training.train_loss)
    fused = 2 * 2 + 1 + 2 if compiled_ops.inductor_works() else 0
    # the configured attention while training, hone's other CPU kernels still on
    assert spy.seen and all(seen == (attention, 7 * 2 + fused) for seen in spy.seen)
    assert f"attention: {attention}  (set in the config)" in console.export_text()
    assert "attention" not in run.manifest.training.cpu_kernels
