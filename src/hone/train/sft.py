"""Supervised fine-tuning (SFT) with loss on assistant turns only, as full fine-tuning or LoRA.

Built on TRL's SFTTrainer. hone tokenises the data itself (hone.data.tokenize) so the same
assistant-only labels serve every method, and hands TRL a dataset that already has `labels`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rich.console import Console

from hone.config import HoneConfig
from hone.data.formats import Example
from hone.data.packing import collate_packed, pack
from hone.data.tokenize import tokenize_chat
from hone.errors import HoneError
from hone.models.templates import training_chat_template
from hone.runs import RunFolder
from hone.train.cpu.swap import language_model
from hone.train.setup import Setup, TrainResult, build_model, callbacks, choose, fit, trainer_arguments

logger = logging.getLogger(__name__)


def to_dataset(
    tokenizer: Any, examples: list[Example], template: str, max_length: int, policy: str, packing: bool
) -> tuple[Any, int]:
    """A `datasets.Dataset` with input_ids and labels (and position_ids when packed), and how many
    examples were too long. Under the `drop` policy too-long examples are left out; otherwise they were
    cut by the policy."""
    rows = [tokenize_chat(tokenizer, e.messages, template, max_length, policy) for e in examples]
    truncated = sum(r.truncated for r in rows)
    if policy == "drop":
        rows = [r for r in rows if not r.truncated]
    if rows and not any(r.loss_tokens for r in rows):
        raise HoneError(
            f"no example keeps any assistant tokens within model.max_length={max_length} ({policy}); "
            "raise model.max_length or use model.truncation: keep_end"
        )
    tokenized = [{"input_ids": r.input_ids, "labels": r.labels} for r in rows]
    return rows_dataset(tokenized, max_length, packing), truncated


def rows_dataset(rows: list[dict[str, list[int]]], width: int, packing: bool) -> Any:
    """Rows of input_ids and labels as a `datasets.Dataset`, packed into rows of `width` if asked."""
    from datasets import Dataset

    if not packing:
        columns = {name: [row[name] for row in rows] for name in ("input_ids", "labels")}
        # the lengths transformers' LengthGroupedSampler groups by, without it iterating every row
        return Dataset.from_dict({**columns, "length": [len(ids) for ids in columns["input_ids"]]})
    packed = pack(rows, width)
    return Dataset.from_dict(
        {name: [getattr(row, name) for row in packed] for name in ("input_ids", "labels", "position_ids")}
    )


class PackedCollator:
    """Batches packed rows: no attention mask, so restarting position_ids keep examples apart."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        return collate_packed(rows, self.pad_token_id)


def padding_free(config: HoneConfig, setup: Setup, model: Any) -> bool:
    """Whether a step's examples go in one row without padding (TRL's padding-free collator: restarting
    position ids and the sequence boundaries). Under `auto` that is where hone's CPU attention trains the
    model, which keeps the examples apart at the cost of padded rows (hone.train.cpu.attention.Segments)
    while everything else in the step skips the padding (6% of a padded batch's positions on the example
    task), so a model family it does not cover stays padded."""
    from hone.train.cpu.attention import supported

    if not setup.padding_free:
        return False
    return config.train.padding_free is True or supported(language_model(model))


def train_sft(
    config: HoneConfig,
    model_path: Path,
    tokenizer: Any,
    train_examples: list[Example],
    validation_examples: list[Example],
    run: RunFolder,
    console: Console,
    resume: Path | None = None,
) -> TrainResult:
    train = config.train
    template = training_chat_template(tokenizer)
    if template is None:
        raise HoneError(
            f"model {config.model.reference}: its chat template has no {{% generation %}} markers and no "
            "shipped training template renders identically, so loss cannot be put on assistant turns only"
        )
    setup = choose(config, console)
    limit, policy = config.model.max_length, config.model.truncation
    train_set, truncated = to_dataset(tokenizer, train_examples, template, limit, policy, train.packing)
    eval_set = None
    if validation_examples:
        eval_set, _ = to_dataset(tokenizer, validation_examples, template, limit, policy, train.packing)
    if truncated:
        console.print(f"[yellow]{truncated} training example(s) over {limit} tokens ({policy})[/]")
    return fit_language_model(
        config, model_path, tokenizer, train_set, eval_set, run, console, setup, resume, truncated
    )


def fit_language_model(
    config: HoneConfig,
    model_path: Path,
    tokenizer: Any,
    train_set: Any,
    eval_set: Any,
    run: RunFolder,
    console: Console,
    setup: Setup,
    resume: Path | None,
    truncated: int,
) -> TrainResult:
    """Next-token training on pre-tokenised rows with labels: SFT and continued pre-training."""
    from trl import SFTConfig

    from hone.train.trainer import HoneSFTTrainer

    validating = eval_set is not None
    grouped = config.train.group_by_length and not config.train.packing
    model = build_model(config, model_path, setup)
    collator: Any = None  # TRL's: batches padded to their longest row
    layout = "padded"
    if config.train.packing:
        collator, layout = PackedCollator(tokenizer.pad_token_id), "packed"
    elif padding_free(config, setup, model):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        collator = DataCollatorForLanguageModeling(tokenizer.pad_token_id, padding_free=True)
        layout = "padding-free"
    args = SFTConfig(
        **trainer_arguments(config, run, setup, validating),
        # a padding-free row is all tokens; counting "non-padding" there would leave out every real token
        # that equals the pad token (often end-of-turn)
        include_num_input_tokens_seen="all" if layout == "padding-free" else "non_padding",
        remove_unused_columns=False,  # hone builds exactly the columns it needs (position_ids when packed)
        max_length=config.model.max_length,
        train_sampling_strategy="group_by_length" if grouped else "random",
    )
    trainer = HoneSFTTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=callbacks(config, console, validating, config.train.method),
    )
    return fit(
        trainer, run, config.train.adapter.kind, resume, truncated, setup.attention, layout, setup.cpu_kernels
    )
