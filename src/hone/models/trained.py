"""A finished run's model as it was trained, ready for generation: what evaluation and export load.

LoRA adapters are merged into their base (generation without the adapter's extra matmuls is faster);
a QLoRA adapter is merged into the base as training saw it, NF4-quantized and dequantized, since
merging into the original weights would give a different model from the one that was trained.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from hone.models.resolve import load_model, load_tokenizer, torch_dtype
from hone.runs import FinishedRun, RunFolder

logger = logging.getLogger(__name__)


def trained_model(
    run: FinishedRun, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[Any, Any]:
    """(model, tokenizer) of a finished language-model run on `device`, in `dtype` (adapters are merged in
    fp32 on the CPU first, so the merged weights are rounded once)."""
    tokenizer = load_tokenizer(run.weights)
    if run.kind == "full":
        return load_model(run.weights, dtype=dtype, device=device), tokenizer
    return merged_model(run, dequantized=run.kind == "qlora").to(device=device, dtype=dtype), tokenizer


def merged_model(run: FinishedRun, dequantized: bool) -> Any:
    from peft import PeftModel

    base = dequantized_base(run) if dequantized else load_model(run.base)
    return PeftModel.from_pretrained(base, run.weights).merge_and_unload()


def dequantized_base(run: FinishedRun) -> Any:
    """The base exactly as QLoRA training saw it: NF4-quantized at the training dtype, then dequantized.

    Loading at the training dtype matters: on a GPU the weights are cast to bf16 before quantization and
    the unquantized ones (embeddings, norms) keep bf16 values, so the fp32 result carries the same
    rounding the adapter was trained against.
    """
    from transformers import AutoModelForCausalLM

    from hone.train.setup import quantization_config

    dtype = training_dtype(run)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    quantized = AutoModelForCausalLM.from_pretrained(
        run.base, quantization_config=quantization_config(dtype), dtype=dtype, device_map=device
    )
    return quantized.dequantize(dtype=torch.float32).to(device="cpu", dtype=torch.float32)


def training_dtype(run: FinishedRun) -> torch.dtype:
    """The precision the run trained at, as recorded by training (else as its config and hardware imply)."""
    manifest = RunFolder(run.path).manifest
    chosen = (manifest.get("training") or {}).get("precision") or run.config.train.precision
    if chosen == "auto":
        hardware = manifest.get("hardware") or {}
        chosen = "bf16" if hardware.get("cuda") else "fp32"  # auto picks bf16 on every GPU that has it
        logger.info("run precision was auto on %s: assuming %s", hardware.get("gpu", "CPU"), chosen)
    return torch_dtype(chosen)
