"""A trained model as it was trained, ready for generation: what evaluation and export load.

LoRA adapters are merged into their base (generation without the adapter's extra matmuls is faster);
a QLoRA adapter is merged into the base as training saw it, NF4-quantized and dequantized, since
merging into the original weights would give a different model from the one that was trained.

This layer knows weights, not run folders: the caller (`hone.runs.FinishedRun`) says where the base and
the trained weights are and at which precision they were trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from hone.models.quantization import quantization_config
from hone.models.resolve import load_model, load_tokenizer, torch_dtype


class TrainedWeights(Protocol):
    """Where a trained model's pieces are: its base folder, its adapter/ or model/ folder, and how."""

    @property
    def base(self) -> Path: ...

    @property
    def weights(self) -> Path: ...

    @property
    def kind(self) -> str: ...  # lora, qlora or full

    @property
    def training_precision(self) -> str: ...  # fp32, bf16 or fp16


def trained_model(
    trained: TrainedWeights, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained language model on `device`, in `dtype` (adapters are merged in
    fp32 on the CPU first, so the merged weights are rounded once)."""
    tokenizer = load_tokenizer(trained.weights)
    if trained.kind == "full":
        return load_model(trained.weights, dtype=dtype, device=device), tokenizer
    merged = merged_model(trained, dequantized=trained.kind == "qlora")
    return merged.to(device=device, dtype=dtype), tokenizer


def merged_model(trained: TrainedWeights, dequantized: bool) -> Any:
    from peft import PeftModel

    base = dequantized_base(trained) if dequantized else load_model(trained.base)
    return PeftModel.from_pretrained(base, trained.weights).merge_and_unload()


def dequantized_base(trained: TrainedWeights) -> Any:
    """The base exactly as QLoRA training saw it: NF4-quantized at the training dtype, then dequantized.

    Loading at the training dtype matters: on a GPU the weights are cast to bf16 before quantization and
    the unquantized ones (embeddings, norms) keep bf16 values, so the fp32 result carries the same
    rounding the adapter was trained against.
    """
    from transformers import AutoModelForCausalLM

    dtype = torch_dtype(trained.training_precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    quantized = AutoModelForCausalLM.from_pretrained(
        trained.base, quantization_config=quantization_config(dtype), dtype=dtype, device_map=device
    )
    return quantized.dequantize(dtype=torch.float32).to(device="cpu", dtype=torch.float32)
