"""The main job end to end: validate data, evaluate the base model, LoRA SFT, evaluate again, compare.

Everything the run produced lands in one run folder (see hone.runs); the before/after table is printed
and written to `metrics.json`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from hone.config import HoneConfig
from hone.data.formats import Example
from hone.data.load import load_split, require_kind
from hone.data.version import dataset_hash
from hone.errors import HoneError
from hone.evaluate.task import Evaluation, evaluate_model, load_schema
from hone.io import atomic_write_json, atomic_write_jsonl
from hone.models.resolve import load_model, load_tokenizer, resolve_model
from hone.runs import RunFolder
from hone.track import track_completed
from hone.train.pipeline import training_summary
from hone.train.sft import train_sft


@dataclass
class Splits:
    train: list[Example]
    validation: list[Example]
    test: list[Example]

    def as_dict(self) -> dict[str, list[Example]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def load_splits(config: HoneConfig) -> Splits:
    """Read and check every split before any compute is spent; one error message lists all problems."""
    data = config.data
    if data.test is None:
        raise HoneError("data.test: the quickstart needs a held-out test split to compare before and after")
    splits = Splits(
        train=load_split(data.train, data.system_prompt, data.format),
        validation=load_split(data.validation, data.system_prompt, data.format) if data.validation else [],
        test=load_split(data.test, data.system_prompt, data.format),
    )
    for examples in splits.as_dict().values():
        require_kind(examples, "chat", config.train.method)
    if config.evaluate.limit:
        splits.test = splits.test[: config.evaluate.limit]
    return splits


def comparison_table(before: Evaluation, after: Evaluation) -> Table:
    table = Table(title="Held-out test split: before and after fine-tuning")
    table.add_column("metric")
    table.add_column(before.label, justify="right")
    table.add_column(after.label, justify="right")
    table.add_column("change", justify="right")
    for name, old, new in metric_rows(before.scores, after.scores):
        table.add_row(name, f"{old:.1%}", f"{new:.1%}", f"{new - old:+.1%}")
    return table


def metric_rows(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, float, float]]:
    rows = [(name, before[name], after[name]) for name in ("json_valid", "schema_valid")]
    for field, value in before["field_accuracy"].items():
        rows.append((f"{field} accuracy", value, after["field_accuracy"][field]))
    rows.append(("exact_match", before["exact_match"], after["exact_match"]))
    return rows


def run_quickstart(config: HoneConfig, console: Console) -> RunFolder:
    began = time.perf_counter()
    torch.manual_seed(config.train.seed)
    splits = load_splits(config)
    schema = load_schema(config.evaluate.json_schema)
    version = dataset_hash(splits.as_dict())
    console.print(
        f"[bold]Data[/] ok: {len(splits.train)} train, {len(splits.validation)} validation, "
        f"{len(splits.test)} test examples; dataset version {version[:12]}"
    )
    model_path = resolve_model(config.model.reference)
    tokenizer = load_tokenizer(model_path)
    run = RunFolder.create(config)
    console.print(f"[bold]Run folder[/] {run.path}")
    try:
        run.update(
            base_model={"path": str(model_path)},
            dataset={
                "hash": version,
                "splits": {
                    name: {"path": str(getattr(config.data, name)), "examples": len(examples)}
                    for name, examples in splits.as_dict().items()
                    if examples
                },
            },
        )
        evaluations = train_and_compare(config, model_path, tokenizer, splits, schema, run, console)
    except BaseException as exc:
        run.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    before, after, summary = evaluations
    summary["wall_seconds"] = round(time.perf_counter() - began, 1)
    atomic_write_json(run.path / "metrics.json", summary)
    run.update(metrics=headline(after.scores), artifacts={"metrics": "metrics.json"})
    run.finish("completed")
    if config.track.enabled:
        track_completed(run, config, console)
    console.print(comparison_table(before, after))
    console.print(f"[bold green]Done[/] in {summary['wall_seconds'] / 60:.1f} min. Run folder: {run.path}")
    return run


def train_and_compare(
    config: HoneConfig,
    model_path: Any,
    tokenizer: Any,
    splits: Splits,
    schema: dict[str, Any] | None,
    run: RunFolder,
    console: Console,
) -> tuple[Evaluation, Evaluation, dict[str, Any]]:
    settings = config.evaluate
    base = load_model(model_path)
    before = evaluate_model(
        "base", base, tokenizer, splits.test, schema, settings.max_new_tokens, settings.batch_size, console
    )
    del base
    save_predictions(run, before)
    result = train_sft(config, model_path, tokenizer, splits.train, splits.validation, run, console)
    # LoRA merges into the fp32 base for faster generation; a 4-bit base would be re-rounded by a merge,
    # so QLoRA is evaluated through its adapter, as it will be served.
    merge = config.train.adapter.kind == "lora"
    tuned = result.model.merge_and_unload() if merge else result.model
    after = evaluate_model(
        "fine-tuned",
        tuned,
        tokenizer,
        splits.test,
        schema,
        settings.max_new_tokens,
        settings.batch_size,
        console,
    )
    save_predictions(run, after)
    summary = {
        "base": before.scores,
        "fine-tuned": after.scores,
        "training": training_summary(result),
    }
    return before, after, summary


def save_predictions(run: RunFolder, evaluation: Evaluation) -> None:
    name = f"eval/{evaluation.label}.jsonl"
    atomic_write_jsonl(run.path / name, evaluation.predictions)
    run.update(artifacts={f"predictions_{evaluation.label}": name})


def headline(scores: dict[str, Any]) -> dict[str, float]:
    """The figures the registry and promotion gates compare: flat, numeric."""
    flat = {
        name: scores[name] for name in ("json_valid", "schema_valid", "exact_match", "mean_field_accuracy")
    }
    flat.update({f"{field}_accuracy": value for field, value in scores["field_accuracy"].items()})
    return flat
