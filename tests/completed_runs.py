"""Completed run folders as training leaves them, built without training: for tests of what reads runs."""

from __future__ import annotations

from pathlib import Path

import torch


def lora_run(
    root: Path, base: Path, name: str = "tuned", seed: int = 0, system_prompt: str | None = None
) -> Path:
    """A completed LoRA run folder as training leaves it, its adapter moved away from zero (by `seed`)."""
    from peft import get_peft_model

    from hone.config import HoneConfig
    from hone.models.resolve import load_model, load_tokenizer
    from hone.runs import RunFolder
    from hone.train.setup import lora_config

    config = HoneConfig.model_validate(
        {
            "model": {"reference": str(base)},
            "data": {"train": "train.jsonl", "system_prompt": system_prompt},
            "train": {"adapter": {"kind": "lora", "r": 4, "alpha": 8}},
            "run": {"name": name, "dir": str(root)},
        }
    )
    run = RunFolder.create(config)
    torch.manual_seed(seed)
    model = get_peft_model(load_model(base), lora_config(config.train.adapter, "CAUSAL_LM"))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.05)
    model.save_pretrained(run.path / "adapter")
    load_tokenizer(base).save_pretrained(run.path / "adapter")
    run.update(base_model={"path": str(base)}, artifacts={"weights": "adapter"})
    run.finish("completed")
    return run.path
