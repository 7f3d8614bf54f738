"""Choices that depend on the machine, each with the reason it was made (printed before training)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hone.config import TrainConfig
from hone.errors import HoneError
from hone.hardware import cpu_bf16_native


@dataclass(frozen=True)
class Choice:
    value: object
    reason: str


def device_choice() -> Choice:
    if torch.cuda.is_available():
        return Choice("cuda", f"CUDA GPU found: {torch.cuda.get_device_name(0)}")
    return Choice("cpu", "no CUDA GPU found")


def precision_choice(train: TrainConfig, device: str) -> Choice:
    if train.precision != "auto":
        return Choice(train.precision, "set in the config")
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return Choice("bf16", "the GPU supports bf16: half the memory, full speed")
    if device == "cuda":
        return Choice("fp16", "the GPU has no bf16; fp16 with loss scaling")
    native = cpu_bf16_native()
    if native:
        return Choice("bf16", f"CPU with {native}: bf16 matmuls beat fp32 and take half the memory")
    return Choice("fp32", "CPU without AMX or AVX512-BF16: bf16 would be emulated, ~15x slower than fp32")


# What attention_choice's `auto` means on CPU with the attention kernel of train.cpu_kernels:
# hone.train.cpu.attention where the model family allows it.
CPU_ATTENTION = "hone"


def attention_choice(train: TrainConfig, device: str) -> Choice:
    if train.attention == "flex_attention" and device != "cuda":
        raise HoneError(
            "train.attention: flex_attention trains only on CUDA GPUs (torch's flex attention has no "
            "backward on CPU); use auto, sdpa or eager here"
        )
    if train.attention != "auto":
        return Choice(train.attention, "set in the config")
    if device == "cpu" and "attention" in train.resolved_cpu_kernels():
        return Choice(
            CPU_ATTENTION, "CPU: grouped query heads without fp32 round trips, where the model family allows"
        )
    if device == "cpu":
        without = "off" if train.cpu_kernels == "off" else "without attention"
        return Choice(
            "sdpa", f"CPU, train.cpu_kernels {without}: torch's scaled_dot_product_attention (transformers')"
        )
    return Choice("sdpa", "GPU: torch's scaled_dot_product_attention (transformers' default)")


def cpu_kernels_choice(train: TrainConfig, device: str, attention: str) -> Choice:
    """hone's CPU kernels to try (hone.train.cpu); each applies only where the model allows it."""
    if device != "cpu":
        return Choice([], "GPU: hone's kernels are for CPU; transformers' and PEFT's own layers train")
    if train.cpu_kernels == "off":
        return Choice([], "set in the config: transformers' and PEFT's own layers train")
    own_attention = attention == CPU_ATTENTION
    names = [name for name in train.resolved_cpu_kernels() if name != "attention" or own_attention]
    if train.cpu_kernels != "auto":
        return Choice(names, "set in the config")
    reason = "CPU: each where it applies to the model; the training summary lists those that ran"
    if attention != CPU_ATTENTION:
        reason += f" (attention: {attention}, as set in the config)"
    return Choice(names, reason)


def padding_free_choice(train: TrainConfig, device: str, attention: str) -> Choice:
    if train.method not in ("sft", "pretrain"):
        return Choice(False, f"{train.method} batches are padded")
    if train.packing:
        return Choice(False, "packing: examples already share rows")
    if train.padding_free != "auto":
        return Choice(bool(train.padding_free), "set in the config")
    if device == "cpu" and attention == CPU_ATTENTION:
        return Choice(True, "CPU: hone's attention keeps each example apart, where the model family allows")
    return Choice(False, "transformers would mask the whole row densely; batches padded to their longest")


def checkpointing_choice(train: TrainConfig, device: str) -> Choice:
    if train.gradient_checkpointing != "auto":
        return Choice(bool(train.gradient_checkpointing), "set in the config")
    if device == "cpu":
        return Choice(False, "CPU: memory is ample and recomputing activations only costs time")
    return Choice(
        train.adapter.kind == "full", "GPU: on for full fine-tuning to fit activations, off for adapters"
    )


def learning_rate_choice(train: TrainConfig) -> Choice:
    if train.learning_rate is not None:
        return Choice(train.learning_rate, "set in the config")
    return Choice(train.resolved_learning_rate(), f"default for {train.adapter.kind}")
