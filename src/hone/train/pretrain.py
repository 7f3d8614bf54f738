"""Continued pre-training: next-token loss on every token of a collection of documents.

Each document is tokenised with an end-of-text token and cut into windows of `model.max_length`, so
nothing is thrown away however long a document is (the truncation policy is for chats, where the end
matters). With `train.packing` the short windows share rows, each with its own positions, so no
document attends to another; without it every window is a row of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from hone.config import HoneConfig
from hone.data.formats import Example
from hone.data.tokenize import IGNORE_INDEX
from hone.runs import RunFolder
from hone.train.setup import TrainResult, choose
from hone.train.sft import fit_language_model, rows_dataset


def document_windows(tokenizer: Any, text: str, width: int) -> list[list[int]]:
    """The document's tokens plus EOS, in consecutive windows of at most `width` tokens.

    A window of one token predicts nothing and is dropped.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    windows = [ids[start : start + width] for start in range(0, len(ids), width)]
    return [window for window in windows if len(window) > 1]


def to_dataset(tokenizer: Any, examples: list[Example], width: int, packing: bool) -> Any:
    """Rows of input_ids with labels equal to them (plus position_ids when packed)."""
    rows = [
        {"input_ids": window, "labels": list(window)}
        for example in examples
        for window in document_windows(tokenizer, example.text or "", width)
    ]
    return rows_dataset(rows, width, packing)


def trained_tokens(dataset: Any) -> int:
    return sum(sum(label != IGNORE_INDEX for label in row) for row in dataset["labels"])


def train_pretrain(
    config: HoneConfig,
    model_path: Path,
    tokenizer: Any,
    train_examples: list[Example],
    validation_examples: list[Example],
    run: RunFolder,
    console: Console,
    resume: Path | None = None,
) -> TrainResult:
    setup = choose(config, console)
    width, packing = config.model.max_length, config.train.packing
    train_set = to_dataset(tokenizer, train_examples, width, packing)
    eval_set = to_dataset(tokenizer, validation_examples, width, packing) if validation_examples else None
    console.print(
        f"[bold]Documents[/] {len(train_examples)} -> {len(train_set)} rows of up to {width} tokens "
        f"({trained_tokens(train_set)} tokens with loss per epoch)"
    )
    return fit_language_model(
        config, model_path, tokenizer, train_set, eval_set, run, console, setup, resume, 0
    )
