"""4-bit NF4 loading settings: the base as QLoRA trains on it, and as export and evaluation rebuild it."""

from __future__ import annotations

from typing import Any

import torch


def quantization_config(dtype: torch.dtype) -> Any:
    """NF4 with double quantisation (the QLoRA paper's setting); bitsandbytes >= 0.49 runs it on CPU too."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
