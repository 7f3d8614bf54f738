"""Supervised fine-tuning (SFT) with loss on assistant turns only, as full fine-tuning or LoRA.

Built on TRL's SFTTrainer. hone tokenises the data itself (hone.data.tokenize) so the same
assistant-only labels serve every method, and hands TRL a dataset that already has `labels`.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from hone.config import HoneConfig
from hone.data.formats import Example
from hone.data.packing import collate_packed, pack
from hone.data.tokenize import tokenize_chat
from hone.errors import HoneError
from hone.io import atomic_write_jsonl
from hone.models.resolve import load_model
from hone.models.templates import training_chat_template
from hone.runs import RunFolder
from hone.train import hardware
from hone.train.progress import RichProgress

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: Any  # the trained model (a PEFT model for adapters), ready for evaluation
    steps: int
    train_loss: float | None
    eval_loss: float | None
    seconds: float
    trained_tokens: int
    truncated: int


def to_dataset(
    tokenizer: Any, examples: list[Example], template: str, max_length: int, policy: str, packing: bool
) -> tuple[Any, int]:
    """A `datasets.Dataset` with input_ids and labels (and position_ids when packed), and how many
    examples were too long. Under the `drop` policy too-long examples are left out; otherwise they were
    cut by the policy."""
    from datasets import Dataset

    rows = [tokenize_chat(tokenizer, e.messages, template, max_length, policy) for e in examples]
    truncated = sum(r.truncated for r in rows)
    if policy == "drop":
        rows = [r for r in rows if not r.truncated]
    tokenized = [{"input_ids": r.input_ids, "labels": r.labels} for r in rows]
    if packing:
        packed = pack(tokenized, max_length)
        columns = {
            name: [getattr(row, name) for row in packed] for name in ("input_ids", "labels", "position_ids")
        }
    else:
        columns = {name: [row[name] for row in tokenized] for name in ("input_ids", "labels")}
    return Dataset.from_dict(columns), truncated


class PackedCollator:
    """Batches packed rows: no attention mask, so restarting position_ids keep examples apart."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        return collate_packed(rows, self.pad_token_id)


def load_quantized(model_path: Path, device: str, dtype: torch.dtype, checkpointing: bool) -> Any:
    """The base in 4-bit NF4 (double quantisation) for QLoRA; bitsandbytes >= 0.49 runs it on CPU too."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_path, quantization_config=quantization, dtype=dtype, device_map=device
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)


def build_model(
    config: HoneConfig, model_path: Path, device: str, dtype: torch.dtype, checkpointing: bool = False
) -> Any:
    adapter = config.train.adapter
    if adapter.kind == "qlora":
        model = load_quantized(model_path, device, dtype, checkpointing)
    else:
        model = load_model(model_path, dtype=dtype, device=device)
    if adapter.kind == "full":
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=adapter.target_modules,
        use_dora=adapter.use_dora,
        use_rslora=adapter.use_rslora,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def print_choices(console: Console, choices: dict[str, hardware.Choice]) -> None:
    for name, choice in choices.items():
        console.print(f"  [cyan]{name}[/]: {choice.value}  [dim]({choice.reason})[/]")


def train_sft(
    config: HoneConfig,
    model_path: Path,
    tokenizer: Any,
    train_examples: list[Example],
    validation_examples: list[Example],
    run: RunFolder,
    console: Console,
) -> TrainResult:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTConfig

    from hone.train.trainer import HoneSFTTrainer

    train = config.train
    template = training_chat_template(tokenizer)
    if template is None:
        raise HoneError(
            f"model {config.model.reference}: its chat template has no {{% generation %}} markers and no "
            "shipped training template renders identically, so loss cannot be put on assistant turns only"
        )
    device = hardware.device_choice()
    choices = {
        "device": device,
        "precision": hardware.precision_choice(train, device.value),
        "gradient checkpointing": hardware.checkpointing_choice(train, device.value),
        "learning rate": hardware.learning_rate_choice(train),
    }
    console.print("[bold]Training choices[/]")
    print_choices(console, choices)
    precision = choices["precision"].value
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)

    limit, policy = config.model.max_length, config.model.truncation
    train_set, truncated = to_dataset(tokenizer, train_examples, template, limit, policy, train.packing)
    eval_set = None
    if validation_examples:
        eval_set, _ = to_dataset(tokenizer, validation_examples, template, limit, policy, train.packing)
    if truncated:
        console.print(f"[yellow]{truncated} training example(s) over {limit} tokens ({policy})[/]")

    checkpointing = bool(choices["gradient checkpointing"].value)
    model = build_model(config, model_path, device.value, dtype, checkpointing)
    args = SFTConfig(
        output_dir=str(run.path / "checkpoints"),
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size * 2,
        gradient_accumulation_steps=train.gradient_accumulation,
        learning_rate=float(choices["learning rate"].value),
        lr_scheduler_type=train.scheduler,
        warmup_steps=train.warmup_ratio,
        weight_decay=train.weight_decay,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=checkpointing,
        logging_steps=train.logging_steps,
        eval_strategy="steps"
        if (eval_set is not None and train.eval_every)
        else "epoch"
        if eval_set
        else "no",
        eval_steps=train.eval_every,
        save_strategy="no",
        report_to="none",
        seed=train.seed,
        data_seed=train.seed,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,  # hone builds exactly the columns it needs (position_ids when packed)
        max_length=config.model.max_length,
        dataloader_num_workers=0,
        use_cpu=device.value == "cpu",
    )
    progress = RichProgress(console)
    trainer = HoneSFTTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=PackedCollator(tokenizer.pad_token_id) if train.packing else None,
        callbacks=[progress],
    )
    for default_display in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(default_display)
    output = trainer.train()
    eval_loss = final_eval_loss(progress.history, trainer.state.global_step)
    if eval_set is not None and eval_loss is None:
        eval_loss = trainer.evaluate()["eval_loss"]
    atomic_write_jsonl(run.path / "history.jsonl", progress.history)
    save_trained(model, tokenizer, run, config.train.adapter.kind)
    losses = [h["loss"] for h in progress.history if "loss" in h]
    return TrainResult(
        model=model,
        steps=trainer.state.global_step,
        train_loss=losses[-1] if losses else output.training_loss,
        eval_loss=eval_loss,
        seconds=output.metrics.get("train_runtime", 0.0),
        trained_tokens=int(trainer.state.num_input_tokens_seen or 0),
        truncated=truncated,
    )


def final_eval_loss(history: list[dict[str, Any]], step: int) -> float | None:
    """The validation loss already logged at the last step, so it is not computed twice."""
    for record in reversed(history):
        if record.get("step") == step and "eval_loss" in record:
            return float(record["eval_loss"])
    return None


def save_trained(model: Any, tokenizer: Any, run: RunFolder, adapter_kind: str) -> None:
    """Adapter weights (or the full model) plus the tokenizer, recorded in the manifest."""
    folder = "model" if adapter_kind == "full" else "adapter"
    staging = run.path / f".tmp-{folder}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    os.replace(staging, run.path / folder)  # a crash mid-save never leaves a folder that looks complete
    run.update(artifacts={"weights": folder, "history": "history.jsonl"})
