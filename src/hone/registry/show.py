"""What `hone registry` prints: rich tables for people, plain JSON (`--json`) for programs."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from hone.registry.gate import Outcome
from hone.registry.store import AuditRecord, Version

LINEAGE_KEYS = (
    ("run", "hone.run_name"),
    ("run folder (at registration)", "hone.run_path"),
    ("method", "hone.method"),
    ("adapter", "hone.adapter"),
    ("adapter settings", "hone.adapter_settings"),
    ("base model", "hone.base_model"),
    ("base weights sha256", "hone.base_model_sha256"),
    ("chat template sha256", "hone.chat_template_sha256"),
    ("system prompt", "hone.system_prompt"),
    ("dataset version", "hone.dataset_hash"),
    ("dataset card version", "hone.dataset_card_version"),
    ("code version", "hone.code_version"),
    ("content sha256", "hone.sha256"),
    ("registered", "hone.registered_at"),
    ("registered by", "hone.registered_by"),
)


def created_text(version: Version) -> str:
    moment = datetime.fromtimestamp(version.created / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="seconds")


def headline(version: Version) -> str:
    """The primary metric with its interval from the first ladder that evaluated the version."""
    for summary in version.tag_json("hone.evaluations", []):
        if "value" in summary:
            return scored(summary)
    return "-"


JSON_TAGS = ("adapter_settings", "dataset_splits", "training", "evaluations", "metrics", "files")


def version_json(version: Version) -> dict[str, Any]:
    """The version with its `hone.*` tags as `lineage`, JSON-valued tags and the config parsed."""
    parsed: dict[str, Any] = {}
    for key, value in version.tags.items():
        name = key.removeprefix("hone.")
        if name in JSON_TAGS:
            parsed[name] = json.loads(value)
        elif key == "hone.config":
            parsed[name] = yaml.safe_load(value)
        elif key.startswith("hone."):
            parsed[name] = value
    return {
        "name": version.name,
        "version": version.version,
        "aliases": sorted(version.aliases),
        "created": created_text(version),
        "description": version.description,
        "source": version.source,
        "mlflow_run_id": version.run_id,
        "lineage": parsed,
    }


def print_models(models: list[tuple[str, list[Version]]], console: Console) -> None:
    table = Table(title="Registered models")
    for column in ("name", "versions", "newest", "aliases"):
        table.add_column(column)
    for name, versions in models:
        aliases = ", ".join(f"{a} -> {v.version}" for v in versions for a in sorted(v.aliases)) or "-"
        newest = str(versions[0].version) if versions else "-"
        table.add_row(name, str(len(versions)), newest, aliases)
    console.print(table)


def print_versions(name: str, versions: list[Version], console: Console) -> None:
    table = Table(title=f"{name}: versions")
    for column in (
        "version",
        "aliases",
        "run",
        "trained",
        "base model",
        "evaluation",
        "registered",
        "sha256",
    ):
        table.add_column(column)
    for version in versions:
        tags = version.tags
        table.add_row(
            str(version.version),
            ", ".join(sorted(version.aliases)) or "-",
            tags.get("hone.run_name", "-"),
            f"{tags.get('hone.method', '?')} {tags.get('hone.adapter', '?')}",
            tags.get("hone.base_model", "-"),
            headline(version),
            created_text(version),
            version.sha256[:12],
        )
    console.print(table)


def print_version(version: Version, console: Console) -> None:
    table = Table(
        title=f"{version.ref}" + (f" ({', '.join(sorted(version.aliases))})" if version.aliases else "")
    )
    table.add_column("field")
    table.add_column("value", overflow="fold")
    table.add_row("description", version.description)
    table.add_row("files", version.source)
    table.add_row("MLflow run", version.run_id or "-")
    for label, key in LINEAGE_KEYS:
        if key in version.tags:
            table.add_row(label, version.tags[key] or '""')
    training = version.tag_json("hone.training")
    if training:
        table.add_row(
            "training",
            f"{training['steps']} steps, eval loss {training.get('eval_loss', float('nan')):.4f}, "
            f"{training['seconds']:.0f} s, {training['precision']}",
        )
    for summary in version.tag_json("hone.evaluations", []):
        table.add_row(f"evaluation {summary['evaluation']}", evaluation_text(summary))
    console.print(table)


def scored(summary: dict[str, Any]) -> str:
    """`exact_match 0.887 [0.833, 0.933]`: a ladder's primary metric for one version, with its interval."""
    return f"{summary['primary_metric']} {summary['value']:.3f} [{summary['low']:.3f}, {summary['high']:.3f}]"


def evaluation_text(summary: dict[str, Any]) -> str:
    text = f"test {summary['test']} ({summary['test_examples']} examples, {summary['test_hash'][:12]})"
    if "value" in summary:
        text += f": {scored(summary)}"
    if summary.get("recommendation"):
        text += f"; recommended: {summary['recommendation']}"
    return text


def print_lineage(version: Version, same_data: list[Version], console: Console) -> None:
    """Back from the version to its data, config and base; across to the versions trained on the same data."""
    tags = version.tags
    splits = version.tag_json("hone.dataset_splits", {})
    config = yaml.safe_load(tags.get("hone.config", "")) or {}
    train = config.get("train", {})
    console.print(f"[bold]{version.ref}[/]  {version.description}")
    console.print(f"  files      {version.source}  (sha256 {version.sha256[:16]})")
    console.print(f"  run        {tags.get('hone.run_name', '-')}  (MLflow run {version.run_id})")
    console.print(f"  dataset    {tags.get('hone.dataset_hash', '-')}")
    for split, info in splits.items():
        console.print(f"               {split}: {info['path']} ({info['examples']} examples)")
    if "hone.dataset_card_version" in tags:
        console.print(
            f"               card: dataset/card.json (version {tags['hone.dataset_card_version'][:16]})"
        )
    settings = tags.get("hone.adapter_settings", "")
    console.print(f"  config     {train.get('method', '?')} {tags.get('hone.adapter', '?')} {settings}")
    steps = f"lr {train.get('learning_rate', '?')}, steps {train.get('max_steps', '?')}"
    console.print(f"             {steps}, seed {train.get('seed', '?')}")
    base_hash = tags.get("hone.base_model_sha256", "-")[:16]
    console.print(f"  base model {tags.get('hone.base_model', '-')}  (weights sha256 {base_hash})")
    console.print(f"  code       {tags.get('hone.code_version', '-')}")
    for summary in version.tag_json("hone.evaluations", []):
        console.print(f"  evaluated  {summary['evaluation']}: {evaluation_text(summary)}")
    print_trained_on(tags.get("hone.dataset_hash", "-"), same_data, console)


def print_trained_on(dataset: str, versions: list[Version], console: Console) -> None:
    console.print(f"[bold]Trained on dataset {dataset[:16]}[/]: {len(versions)} version(s)")
    for version in versions:
        aliases = f" ({', '.join(sorted(version.aliases))})" if version.aliases else ""
        console.print(
            f"  {version.ref}{aliases}  run {version.tags.get('hone.run_name', '-')}  {headline(version)}"
        )


def lineage_json(version: Version | None, same_data: list[Version], dataset: str) -> dict[str, Any]:
    return {
        "version": version_json(version) if version else None,
        "dataset": dataset,
        "trained_on_dataset": [v.ref for v in same_data],
    }


def print_history(name: str, records: list[AuditRecord], console: Console) -> None:
    table = Table(title=f"{name}: promotions, refusals and rollbacks")
    for column in ("when", "who", "action", "alias", "from", "to", "why / gate"):
        table.add_column(column, overflow="fold")
    for record in records:
        why = record.reason or "; ".join(
            f"{rule['rule']} {'ok' if rule['passed'] else 'FAILED'}" for rule in record.gate
        )
        table.add_row(
            record.at,
            record.user,
            record.action,
            record.alias,
            str(record.from_version) if record.from_version else "-",
            str(record.to_version) if record.to_version else "-",
            why or "-",
        )
    console.print(table)


def print_gate(outcome: Outcome, console: Console) -> None:
    holder = f"{outcome.candidate.name}/{outcome.holder.version}" if outcome.holder else "none"
    table = Table(title=f"Gate: {outcome.candidate.ref} -> {outcome.alias} (holder {holder})")
    for column in ("rule", "result", "numbers"):
        table.add_column(column, overflow="fold")
    for rule in outcome.rules:
        table.add_row(rule.name, "[green]pass[/]" if rule.passed else "[red]FAIL[/]", rule.detail)
    console.print(table)
    if outcome.ladder:
        console.print(f"ladder: {outcome.ladder}")
