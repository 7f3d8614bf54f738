"""A LoRA model of the tiny llama whose adapters change the output, and its loss and gradients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def lora_model(folder: Path, **lora: Any) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(folder), LoraConfig(r=4, target_modules="all-linear", **lora)
    )
    for name, weight in model.named_parameters():  # PEFT starts B at zero: give the adapters an effect
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.1)
    return model.train()


def loss_and_grads(
    model: Any, ids: torch.Tensor, autocast: bool = False
) -> tuple[torch.Tensor, dict[str, Any]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
