"""The `hone` command: one table of command name -> function, no logic of its own."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hone.config import HoneConfig
from hone.errors import HoneError
from hone.estimate import (
    API_INPUT_PRICE,
    API_OUTPUT_PRICE,
    CALIBRATED_CPU_MFU,
    COMPLETION_TOKENS,
    GPU_MFU,
    METHODS,
    PROMPT_TOKENS,
)


def output_console(stderr: bool = False) -> Console:
    """Rich's console, 160 columns wide where the output is not a terminal and COLUMNS says nothing: rich
    would draw 80 there and cut every figure of the ladder's tables in logs and pipes."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=160 if piped else None)


console = output_console()
errors = output_console(stderr=True)
app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="hone: the fine-tuning lifecycle for LLMs."
)
config_app = typer.Typer(no_args_is_help=True, help="Validate and show configs.")
models_app = typer.Typer(no_args_is_help=True, help="Model references and the conversion cache.")
app.add_typer(config_app, name="config")
data_app = typer.Typer(no_args_is_help=True, help="Check, preview and prepare training data.")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
registry_app = typer.Typer(
    no_args_is_help=True, help="Model versions with lineage, aliases moved through a gate, rollback."
)
app.add_typer(registry_app, name="registry")
feedback_app = typer.Typer(
    help="Feedback on served answers (POST /v1/feedback), beside the request log.", no_args_is_help=True
)
app.add_typer(feedback_app, name="feedback")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
Overrides = Annotated[
    list[str] | None, typer.Argument(help="Dotted overrides, e.g. train.learning_rate=1e-4")
]
StoreOption = Annotated[
    str | None, typer.Option("--uri", help="MLflow store; default HONE_TRACKING_URI, else SQLite in .hone/.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


@config_app.command("validate")
def config_validate(path: Path, overrides: Overrides = None) -> None:
    """Check a config file and that every file, folder, model and run it names is there; exit code 2 with
    the full path of every bad field."""
    from hone.config import load_config
    from hone.preflight import check_config

    for note in check_config(load_config(path, overrides), str(path)):
        console.print(f"[yellow]note[/] {note}")
    console.print(f"[green]ok[/] {path}")


@config_app.command("show")
def config_show(path: Path, overrides: Overrides = None) -> None:
    """Print the resolved config: the file, overrides applied, every default spelled out."""
    from hone.config import dump_config, load_config

    console.print(dump_config(load_config(path, overrides)), end="", markup=False, highlight=False)


@models_app.command("list")
def models_list() -> None:
    """Built-in aliases and converted models in the cache, with their sizes."""
    from hone.models.resolve import ALIASES, cached_models, models_cache

    cached = {name: size for name, _, size in cached_models()}
    table = Table(title=f"Models (cache: {models_cache()})")
    for column in ("name", "kind", "source", "cached size"):
        table.add_column(column)
    for name, alias in ALIASES.items():
        size = cached.pop(name, None)
        table.add_row(name, "alias", alias.description, human_size(size) if size else "not converted yet")
    for name, size in cached.items():
        table.add_row(name, "converted", "local GGUF", human_size(size))
    console.print(table)


@data_app.command("check")
def data_check(
    target: Annotated[Path, typer.Argument(help="A data file, or a config whose data splits are checked.")],
    overrides: Overrides = None,
    data_format: Annotated[str, typer.Option("--format", help="auto, messages, alpaca, ...")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report on stdout.")] = False,
    price_per_hour: Annotated[
        float | None,
        typer.Option(help="Machine price, USD/hour, for the cost estimate; hone estimate's default."),
    ] = None,
    outliers: Annotated[
        bool,
        typer.Option(
            "--outliers",
            help="Also warn on train examples far from the rest by embedding (embeds every example: slow "
            "on large files, see docs/data.md).",
        ),
    ] = False,
) -> None:
    """Every problem by file, line and field: lengths, duplicates, leakage, PII, poisoning, cost. Exit 2."""
    from hone.data.check import run_data_check
    from hone.data.check_report import print_report
    from hone.estimate_report import data_check_estimate
    from hone.models.resolve import resolve_model

    config = data_target_config(target, overrides)
    splits = {name: path for name in ("train", "validation", "test") if (path := getattr(config.data, name))}
    model_path = resolve_model(config.model.reference)
    report = run_data_check(
        splits,
        model_path=model_path,
        max_length=config.model.max_length,
        train=config.train,
        fmt=data_format if data_format != "auto" else config.data.format,
        opt_in=config.model,
        outliers=outliers,
    )
    report.estimate = data_check_estimate(report, config.train, model_path, price_per_hour)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, console)
    if report.error_count:
        raise typer.Exit(2)


@data_app.command("preview")
def data_preview(
    target: Annotated[Path, typer.Argument(help="A data file, or a config (its train split is shown).")],
    overrides: Overrides = None,
    count: Annotated[int, typer.Option("--count", "-n", help="Examples to show.")] = 3,
) -> None:
    """Render examples exactly as the model is trained on them; tokens that carry loss are highlighted."""
    from hone.data.preview import preview_examples

    config = data_target_config(target, overrides)
    preview_examples(config, count, console)


@data_app.command("prepare")
def data_prepare(
    sources: Annotated[list[str], typer.Argument(help="Data files or folders; `path@2` doubles a weight.")],
    out: Annotated[Path, typer.Option(help="Folder that holds dataset versions.")] = Path("data/versions"),
    split: Annotated[str, typer.Option(help="train,validation,test fractions.")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Seed of the split and of weighted sampling.")] = 42,
    stratify_by: Annotated[str | None, typer.Option(help="JSON answer field to stratify by.")] = None,
    redact_pii: Annotated[bool, typer.Option("--redact-pii", help="Replace PII with placeholders.")] = False,
    dedup: Annotated[bool, typer.Option(" /--keep-duplicates", help="Keep exact duplicates.")] = True,
    data_format: Annotated[str, typer.Option("--format", help="auto, messages, alpaca, ...")] = "auto",
    system_prompt: Annotated[str | None, typer.Option(help="System prompt for examples without one.")] = None,
) -> None:
    """Deterministic split, optional PII redaction and dedup; writes a dataset version named by its hash."""
    from hone.data.prepare import PrepareOptions, parse_source, prepare_dataset

    options = PrepareOptions(
        fractions=parse_fractions(split),
        seed=seed,
        stratify_by=stratify_by,
        redact_pii=redact_pii,
        dedup=dedup,
        fmt=data_format,
        system_prompt=system_prompt,
    )
    folder = prepare_dataset([parse_source(s) for s in sources], out, options)
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    sizes = ", ".join(f"{name} {info['examples']}" for name, info in card["splits"].items())
    console.print(f"[green]dataset version[/] {card['version'][:16]}: {sizes} -> {folder}")


def parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(v < 0 for v in values) or values[0] <= 0 or sum(values) <= 0:
        raise HoneError(f"--split {text!r}: expected three non-negative fractions, e.g. 0.8,0.1,0.1")
    return values  # type: ignore[return-value]


def data_target_config(target: Path, overrides: list[str] | None) -> HoneConfig:
    """A config file as is, or a bare data file wrapped in the default config as its train split."""
    from hone.config import apply_overrides, format_validation_error, load_config

    if target.suffix in (".yaml", ".yml"):
        return load_config(target, overrides)
    raw = apply_overrides({"data": {"train": str(target)}}, overrides or [])
    try:
        return HoneConfig.model_validate(raw)
    except ValidationError as exc:
        raise HoneError(format_validation_error(exc, "overrides")) from None


@app.command("track")
def track(
    run: Annotated[Path, typer.Argument(help="A run folder (runs/<name>).")],
    uri: Annotated[str | None, typer.Option(help="MLflow tracking URI; default SQLite in .hone/.")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "hone",
) -> None:
    """Log a run folder's params, metrics and artifacts to MLflow (runs are logged on completion too)."""
    from hone.track import log_run

    console.print(f"MLflow run {log_run(run, uri, experiment)}")


@registry_app.command("add")
def registry_add(
    run: Annotated[Path, typer.Argument(help="A completed training run folder (runs/<name>).")],
    name: Annotated[str, typer.Option("--name", help="The registered model, e.g. support-tickets.")],
    uri: StoreOption = None,
) -> None:
    """Register a run as the model's next version: its files copied and hashed, its lineage as tags."""
    from hone.registry.store import Registry

    version = Registry(uri).add(run, name)
    console.print(f"[green]registered[/] {version.ref} (sha256 {version.sha256[:16]}) from {run}")


@registry_app.command("list")
def registry_list(
    name: Annotated[str | None, typer.Argument(help="A model: its versions; none: every model.")] = None,
    as_json: JsonOption = False,
    uri: StoreOption = None,
) -> None:
    """Registered models, or one model's versions with aliases, run, base and evaluation."""
    from hone.registry.show import print_models, print_versions, version_json
    from hone.registry.store import Registry

    registry = Registry(uri)
    if name is not None:
        registry.model_exists(name)
    versions = registry.versions(name)
    if as_json:
        print(json.dumps([version_json(version) for version in versions], indent=2))
    elif name is not None:
        print_versions(name, versions, console)
    else:
        names = registry.names()
        print_models([(n, [v for v in versions if v.name == n]) for n in names], console)


@registry_app.command("show")
def registry_show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME/VERSION or NAME@ALIAS.")],
    as_json: JsonOption = False,
    uri: StoreOption = None,
) -> None:
    """One version: its files, lineage, training summary and evaluations."""
    from hone.registry.refs import parse_ref
    from hone.registry.show import print_version, version_json
    from hone.registry.store import Registry

    version = Registry(uri).version(parse_ref(ref))
    if as_json:
        print(json.dumps(version_json(version), indent=2))
    else:
        print_version(version, console)


@registry_app.command("lineage")
def registry_lineage(
    ref: Annotated[
        str,
        typer.Argument(help="NAME/VERSION or NAME@ALIAS; or dataset:<hash> or a prepared dataset folder."),
    ],
    as_json: JsonOption = False,
    uri: StoreOption = None,
) -> None:
    """Back from a version to its dataset, config and base model; forward from a dataset to its models."""
    from hone.registry.lineage import lineage
    from hone.registry.show import lineage_json, print_lineage, print_trained_on
    from hone.registry.store import Registry

    version, dataset, same_data = lineage(Registry(uri), ref)
    if as_json:
        print(json.dumps(lineage_json(version, same_data, dataset), indent=2))
    elif version is not None:
        print_lineage(version, same_data, console)
    else:
        print_trained_on(dataset, same_data, console)


@registry_app.command("promote")
def registry_promote(
    ref: Annotated[str, typer.Argument(help="NAME/VERSION (or NAME@ALIAS) to promote.")],
    to: Annotated[str, typer.Option("--to", help="The alias: staging or production.")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Target, gate, serving and test split; default the version's own."
        ),
    ] = None,
    overrides: Overrides = None,
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate refuses.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (required with --force).")] = None,
    against: Annotated[
        str | None,
        typer.Option("--against", help="Judge it against this alias's holder (staging vs production)."),
    ] = None,
    uri: StoreOption = None,
) -> None:
    """Move an alias to a version through the gate (target, holder, general capability, servable). Exit 1
    when the gate refuses."""
    from hone.registry.gate import promote
    from hone.registry.refs import parse_ref
    from hone.registry.show import print_gate
    from hone.registry.store import Registry

    outcome = promote(Registry(uri), parse_ref(ref), to, console, config, overrides, force, reason, against)
    if outcome.record is None:
        console.print(f"{outcome.candidate.ref} already holds {to}; nothing to do")
        return
    print_gate(outcome, console)
    name = outcome.candidate.name
    if outcome.record.action == "refuse":
        errors.print(f"[red]refused[/]: {name}@{to} stays at {outcome.record.from_version or 'none'}")
        raise typer.Exit(1)
    forced = " [yellow](forced past the gate)[/]" if outcome.record.action == "force" else ""
    console.print(f"[green]promoted[/] {outcome.candidate.ref} -> {name}@{to}{forced}")


@registry_app.command("rollback")
def registry_rollback(
    name: Annotated[str, typer.Argument(help="The registered model.")],
    alias: Annotated[str, typer.Option("--alias", help="The alias to move back.")] = "production",
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the audit trail.")] = None,
    uri: StoreOption = None,
) -> None:
    """Point the alias back to the version it held before, at once (serving follows the alias)."""
    from hone.registry.gate import rollback
    from hone.registry.store import Registry

    record = rollback(Registry(uri), name, alias, reason)
    console.print(f"[green]rolled back[/] {name}@{alias}: {record.from_version} -> {record.to_version}")


@registry_app.command("history")
def registry_history(
    name: Annotated[str, typer.Argument(help="The registered model.")],
    as_json: JsonOption = False,
    uri: StoreOption = None,
) -> None:
    """Every promotion, refusal and rollback: when, who, from, to, why, the gate's numbers."""
    from hone.registry.show import print_history
    from hone.registry.store import Registry

    records = Registry(uri).history(name)
    if as_json:
        print(json.dumps([record.model_dump(mode="json", exclude_none=True) for record in records], indent=2))
    else:
        print_history(name, records, console)


@app.command("serve")
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="Serve config (configs/serve.yaml).")],
    overrides: Overrides = None,
) -> None:
    """An OpenAI-compatible server: the base model and the registry's adapters, routes and aliases."""
    from hone.config import load_serve_config
    from hone.serve import run_server

    run_server(load_serve_config(config, overrides), console)


ServeConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Serve config (configs/serve.yaml).")]
SinceOption = Annotated[
    str | None, typer.Option("--since", help="The window: 30m, 24h, 7d; default monitor.since.")
]


@app.command("monitor")
def monitor(
    config: ServeConfigOption,
    since: SinceOption = None,
    as_json: JsonOption = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="Exit with code 1 when a threshold (monitor.thresholds) is breached."),
    ] = False,
    prometheus: Annotated[
        Path | None, typer.Option("--prometheus", help="Also write the figures here as Prometheus text.")
    ] = None,
    overrides: Overrides = None,
) -> None:
    """Requests, errors, latency, feedback, online checks and input drift per route and version; canaries
    judged against production."""
    from hone.config import load_serve_config
    from hone.operate.monitor import monitor as measure
    from hone.operate.monitor import print_monitoring, write_prometheus

    result = measure(load_serve_config(config, overrides), since)
    if prometheus is not None:
        write_prometheus(result, prometheus)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_monitoring(result, console)
    if check and result.breaches:
        raise typer.Exit(1)


@app.command("retrain")
def retrain(
    name: Annotated[str, typer.Argument(help="The registered model, e.g. support-tickets.")],
    config: ServeConfigOption,
    from_logs: Annotated[
        bool, typer.Option("--from-logs", help="Add the request log's corrections (and rated answers).")
    ] = False,
    data: Annotated[
        Path | None, typer.Option("--data", help="Add these training examples (a data file).")
    ] = None,
    since: SinceOption = None,
    min_rating: Annotated[
        float | None,
        typer.Option("--min-rating", min=0.0, max=1.0, help="With --from-logs: answers rated this well too."),
    ] = None,
    source: Annotated[str, typer.Option("--from", help="The alias of the version retrained.")] = "production",
    to: Annotated[str, typer.Option("--to", help="The alias the new version is promoted to.")] = "staging",
    out: Annotated[Path, typer.Option("--out", help="Folder that holds dataset versions.")] = Path(
        "data/versions"
    ),
    as_json: JsonOption = False,
    overrides: Overrides = None,
) -> None:
    """Train the production version's recipe on its data plus what production taught (corrections from the
    logs, or --data), compare with production on the frozen test split and the new data, register, and
    promote to staging through the gate. Exit 1 when the gate refuses."""
    from hone.config import load_serve_config
    from hone.operate.retrain import print_retrained
    from hone.operate.retrain import retrain as run_retrain

    if not from_logs and data is None:
        raise HoneError("retrain: nothing new to train on: pass --from-logs, --data PATH or both")
    result = run_retrain(
        load_serve_config(config, overrides),
        name,
        console,
        source=source,
        to=to,
        from_logs=from_logs,
        data=data,
        since=since,
        min_rating=min_rating,
        out=out,
    )
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_retrained(result, console)
    if not result.promoted:
        raise typer.Exit(1)


@feedback_app.command("list")
def feedback_list(
    config: ServeConfigOption,
    since: SinceOption = None,
    as_json: JsonOption = False,
    overrides: Overrides = None,
) -> None:
    """Feedback in the window, newest last: the rating, the version rated, and whether it has a correction."""
    from hone.config import load_serve_config
    from hone.operate.feedback import list_feedback, print_feedback

    rows = list_feedback(load_serve_config(config, overrides), since)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_feedback(rows, console)


@feedback_app.command("show")
def feedback_show(
    id: Annotated[str, typer.Argument(help="A feedback id (fb-...) or the response id it rates.")],
    config: ServeConfigOption,
    as_json: JsonOption = False,
    overrides: Overrides = None,
) -> None:
    """One rated response in full: the request, the answer, each rating, correction and comment."""
    from hone.config import load_serve_config
    from hone.operate.feedback import print_rated, rated_response

    shown = rated_response(load_serve_config(config, overrides), id)
    if as_json:
        print(json.dumps(shown, indent=2, default=str))
    else:
        print_rated(shown, console)


@data_app.command("from-logs")
def data_from_logs(
    config: ServeConfigOption,
    since: SinceOption = None,
    min_rating: Annotated[
        float | None,
        typer.Option(
            "--min-rating", help="Also take answers rated this well (0-1; thumbs up 1) and not corrected."
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Only requests this version answered (NAME/N).")
    ] = None,
    train: Annotated[
        Path | None,
        typer.Option("--train", help="Drop examples this train split holds; default monitor.train_split."),
    ] = None,
    test: Annotated[
        Path | None, typer.Option("--test", help="The frozen test split: its prompts are left out.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder that holds dataset versions.")] = Path("data/versions"),
    overrides: Overrides = None,
) -> None:
    """The request log's corrections (SFT examples and preference pairs) as a new dataset version, with
    each example's response and feedback ids in its card. Exit 2 when nothing usable is found."""
    from hone.config import load_serve_config
    from hone.operate.from_logs import dataset_from_logs, print_from_logs

    settings = load_serve_config(config, overrides)
    result = dataset_from_logs(
        settings,
        out,
        since=since,
        min_rating=min_rating,
        include_rated=min_rating is not None,
        train=train or settings.monitor.train_split,
        test=test,
        version=version,
    )
    print_from_logs(result, console)


@app.command("serve-key")
def serve_key() -> None:
    """A new random API key, and the sha256 that goes into serve.api_key_sha256 (the key is not stored)."""
    import secrets

    from hone.serve.app import key_digest

    key = f"hone-{secrets.token_urlsafe(32)}"
    console.print(f"key (give it to the client):          {key}", markup=False, highlight=False)
    console.print(f"serve.api_key_sha256 (put in config): {key_digest(key)}", markup=False, highlight=False)


@app.command("train")
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    overrides: Overrides = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run folder from its newest complete checkpoint.")
    ] = None,
) -> None:
    """Train with the config's method (sft, pretrain, dpo, reward, rl) and adapter; or --resume a run."""
    from hone.config import load_config
    from hone.train.pipeline import resume_training, run_training

    if resume is not None:
        if config is not None or overrides:
            raise HoneError("--resume takes the run's own config; drop --config and overrides")
        resume_training(resume, console)
    elif config is None:
        raise HoneError("hone train needs --config CONFIG (or --resume RUN)")
    else:
        run_training(load_config(config, overrides), console)


@app.command("evaluate")
def evaluate(
    config: ConfigOption,
    overrides: Overrides = None,
    candidate: Annotated[
        list[str] | None,
        typer.Option(
            "--candidate",
            help="A completed run folder, or a registered version (NAME/VERSION, NAME@ALIAS), to add as a "
            "rung (repeatable).",
        ),
    ] = None,
    uri: StoreOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print ladder.json to stdout (progress to stderr).")
    ] = False,
) -> None:
    """The decision ladder: zero-shot, few-shot, RAG and fine-tuned runs on one test split, and a verdict."""
    from hone.config import load_config
    from hone.evaluate.ladder import run_evaluation
    from hone.evaluate.summary import show_ladder
    from hone.registry.store import candidate_folders

    shown = errors if as_json else console
    settings = load_config(config, overrides)
    listed = [str(path) for path in settings.evaluate.candidates]  # the config may name versions too
    folders, names = candidate_folders([*listed, *(candidate or [])], uri)
    settings.evaluate.candidates = []
    run, ladder = run_evaluation(settings, folders, shown, names)
    if as_json:
        from hone.contract import to_json

        print(json.dumps(to_json(ladder), indent=2))
        return
    show_ladder(ladder, console)
    console.print(f"Report: {run.path / 'report.html'}")


@app.command("quickstart")
def quickstart(config: ConfigOption = Path("configs/quickstart.yaml"), overrides: Overrides = None) -> None:
    """The main job end to end on the example task: check data, LoRA SFT, then the decision ladder."""
    from hone.config import load_config
    from hone.quickstart import run_quickstart

    run_quickstart(load_config(config, overrides), console)


@app.command("export")
def export(
    source: Annotated[
        str,
        typer.Argument(
            help="A completed run folder (runs/<name>), or a registered version (NAME/3, NAME@ALIAS)."
        ),
    ],
    merge: Annotated[bool, typer.Option("--merge", help="Merged safetensors model.")] = False,
    gguf: Annotated[
        bool, typer.Option("--gguf", help="GGUF for llama.cpp/Ollama, with a Modelfile.")
    ] = False,
    quant: Annotated[str, typer.Option(help="GGUF type: f32, f16, bf16, q8_0, q4_k_m, ...")] = "q8_0",
    dequantize: Annotated[
        bool, typer.Option("--dequantize", help="QLoRA: merge into the dequantized 4-bit base.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Export folder; default <run>/export, or exports/<name>-v<N> for a version."),
    ] = None,
    parity: Annotated[bool, typer.Option(" /--no-parity", help="Skip the GGUF parity check.")] = True,
    uri: StoreOption = None,
) -> None:
    """Merge the adapter into its base and/or write a GGUF; the GGUF is checked against the merged model."""
    from hone.export.gguf import to_gguf
    from hone.export.merge import merge as merge_run
    from hone.export.parity import parity_check, parity_table
    from hone.registry.store import candidate_folders

    if not (merge or gguf):
        raise HoneError("hone export: choose what to write: --merge, --gguf, or both")
    (run,), names = candidate_folders([source], uri)
    version = names.get(run)  # a registered version's hashed files are read, never written into
    root = out or (Path("exports") / version if version else run / "export")
    record = version is None
    if not gguf:
        console.print(f"[green]merged model[/] {merge_run(run, root / 'merged', dequantize, record)}")
        return
    exported = to_gguf(
        run, quant, root / f"gguf-{quant}", dequantize, merged_out=root / "merged", record=record
    )
    console.print(f"[green]merged model[/] {exported.merged}\n[green]GGUF[/] {exported.model}")
    console.print(f"[green]LoRA GGUF[/] {exported.lora or f'[dim]none: {exported.lora_skipped}[/]'}")
    console.print(f"[green]Ollama[/] ollama create {exported.run.name} -f {exported.modelfile}")
    if exported.system_warning:
        errors.print(Text.assemble(("warning: ", "bold yellow"), exported.system_warning), soft_wrap=True)
    if parity:
        result = parity_check(exported)
        console.print(parity_table(result))
        for problem in result.problems:
            errors.print(Text.assemble(("parity proves nothing for ", "red"), problem), soft_wrap=True)
        if not result.ok:
            if not result.problems:
                errors.print(
                    f"[red]a {quant} GGUF should give the merged model's greedy outputs; it does not[/]"
                )
            raise typer.Exit(1)


@app.command("estimate")
def estimate(
    model: Annotated[str, typer.Option(help="Parameter count (135M, 1.5B, 7e9) or model reference.")] = (
        "smollm2-135m-instruct"
    ),
    method: Annotated[list[str] | None, typer.Option(help="full, lora or qlora; default all three.")] = None,
    tokens: Annotated[str | None, typer.Option(help="Tokens per epoch, e.g. 2M; default 1M.")] = None,
    data: Annotated[Path | None, typer.Option(help="JSONL file whose tokens are counted instead.")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the tokens.")] = 1.0,
    hardware: Annotated[
        str, typer.Option(help="cpu (measured here) or h100, a100-80gb, l4, t4, ...")
    ] = "cpu",
    mfu: Annotated[
        float | None,
        typer.Option(
            help=f"Share of peak FLOP/s; cpu {CALIBRATED_CPU_MFU['fp32']:g} (fp32) or "
            f"{CALIBRATED_CPU_MFU['bf16']:g} (bf16), GPU {GPU_MFU:g}."
        ),
    ] = None,
    price_per_hour: Annotated[float | None, typer.Option(help="Machine price, USD/hour.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per sequence; 512 or the data's mean.")] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per optimizer step.")] = 8,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (all-linear).")] = 16,
    api_input_price: Annotated[float, typer.Option(help="API USD per 1M input tokens.")] = API_INPUT_PRICE,
    api_output_price: Annotated[float, typer.Option(help="API USD per 1M output tokens.")] = API_OUTPUT_PRICE,
    prompt_tokens: Annotated[int, typer.Option(help="Input tokens per request.")] = PROMPT_TOKENS,
    completion_tokens: Annotated[int, typer.Option(help="Output tokens per request.")] = COMPLETION_TOKENS,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable estimate on stdout.")] = False,
) -> None:
    """Time, memory and money of fine-tuning before it starts; when self-hosting beats an API."""
    from hone.estimate_report import EstimateOptions, print_estimate, run_estimate

    options = EstimateOptions(
        model=model,
        methods=tuple(method or METHODS),
        tokens=tokens,
        data=data,
        epochs=epochs,
        hardware=hardware,
        mfu=mfu,
        price_per_hour=price_per_hour,
        seq_len=seq_len,
        batch_size=batch_size,
        lora_r=lora_r,
        api_input_price=api_input_price,
        api_output_price=api_output_price,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
    report = run_estimate(options)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_estimate(report, console)


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("HONE_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s"
    )
    quiet_libraries()
    try:
        code = app(standalone_mode=False)  # returns the code of a typer.Exit instead of exiting
        if isinstance(code, int) and code:
            sys.exit(code)
    except HoneError as exc:
        errors.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        # click's usage errors (an unknown option, a missing argument) carry their own exit code and
        # message; recent typer versions raise them from a vendored copy of click, so look at the shape.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise


def quiet_libraries() -> None:
    """Library progress bars and advice would bury hone's own output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    import datasets

    datasets.disable_progress_bars()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # optional CPU kernels it does not need
    hf_logging.disable_progress_bar()
