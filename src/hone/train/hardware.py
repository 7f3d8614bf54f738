"""Choices that depend on the machine, each with the reason it was made (printed before training)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hone.config import TrainConfig


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
    return Choice("fp32", "CPU: bf16 matmuls are ~15x slower than fp32 on CPUs without native bf16")


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
