"""hone's hardware choices. Which CPU features are present cannot vary on one machine, so torch's own
feature probes are replaced here; everything else is real."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hone.config import TrainConfig, load_config
from hone.errors import HoneError
from hone.train import hardware
from hone.train.setup import Setup, load_base

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "native", "precision"),
    [(True, True, "AMX", "bf16"), (False, True, "AVX512-BF16", "bf16"), (False, False, None, "fp32")],
)
def test_cpu_precision_follows_native_bf16(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, native: str | None, precision: str
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert hardware.cpu_bf16_native() == native
    choice = hardware.precision_choice(TrainConfig(), "cpu")
    assert choice.value == precision
    assert (native or "without AMX") in choice.reason
    assert hardware.precision_choice(TrainConfig(precision="fp32"), "cpu").value == "fp32"  # the config wins


def test_full_fine_tuning_keeps_fp32_weights_under_bf16(tiny_model_dir: Path) -> None:
    config = load_config(REPO / "configs" / "quickstart.yaml")
    setup = Setup(
        {
            "device": hardware.Choice("cpu", ""),
            "precision": hardware.Choice("bf16", ""),
            "gradient checkpointing": hardware.Choice(False, ""),
            "learning rate": hardware.Choice(config.train.resolved_learning_rate(), ""),
            "attention": hardware.Choice(hardware.CPU_ATTENTION, ""),
        }
    )
    frozen = load_base(tiny_model_dir, setup, quantized=False)
    trained = load_base(tiny_model_dir, setup, quantized=False, trained=True)
    assert next(frozen.parameters()).dtype == torch.bfloat16  # a frozen base is held in bf16
    assert {p.dtype for p in trained.parameters()} == {torch.float32}  # AdamW updates fp32 master weights


def test_attention_is_hone_s_on_cpu_sdpa_on_gpus_and_flex_only_on_gpus() -> None:
    auto = TrainConfig()
    assert hardware.attention_choice(auto, "cpu").value == hardware.CPU_ATTENTION
    assert hardware.attention_choice(auto, "cuda").value == "sdpa"
    assert hardware.attention_choice(TrainConfig(attention="eager"), "cpu") == hardware.Choice(
        "eager", "set in the config"
    )
    flex = TrainConfig(attention="flex_attention")
    assert hardware.attention_choice(flex, "cuda").value == "flex_attention"
    with pytest.raises(HoneError, match="flex_attention trains only on CUDA"):
        hardware.attention_choice(flex, "cpu")


def test_padding_free_batches_where_hone_s_cpu_attention_trains_sft_or_pretraining() -> None:
    auto = TrainConfig()
    assert hardware.padding_free_choice(auto, "cpu", hardware.CPU_ATTENTION).value is True
    assert hardware.padding_free_choice(auto, "cpu", "sdpa").value is False  # one dense mask over the row
    assert hardware.padding_free_choice(auto, "cuda", "sdpa").value is False
    assert hardware.padding_free_choice(TrainConfig(padding_free=True), "cuda", "sdpa").value is True
    assert hardware.padding_free_choice(TrainConfig(padding_free=False), "cpu", "hone").value is False
    assert hardware.padding_free_choice(TrainConfig(packing=True), "cpu", "hone").value is False
    dpo = TrainConfig(method="dpo")
    padded = hardware.Choice(False, "dpo batches are padded")
    assert hardware.padding_free_choice(dpo, "cpu", "hone") == padded
