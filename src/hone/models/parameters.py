"""Counting a model's parameters: the one counter `hone estimate`, `hone data check` and training share.

It sits with the models, below every stage, so the estimate and the data check can count a model without
importing the trainer. `hone.estimate.shape_from_config` derives the same count from a llama-family config by
arithmetic (tested equal to this one); this module counts what a built model actually holds.
"""

from __future__ import annotations

from typing import Any


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    """Values in the model's parameters, each tensor once: a tied LM head and its embeddings count once.

    `trainable_only` counts those with `requires_grad` (a LoRA model's adapters). A bitsandbytes 4-bit
    weight reports its packed storage (two values per byte), so count a quantized model before quantizing.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_parameters_on_meta(config: Any) -> int:
    """The exact count of any causal-LM architecture from its config: built on the meta device, so no
    memory is allocated and no weights are read."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return count_parameters(model)
