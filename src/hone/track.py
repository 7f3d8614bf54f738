"""Experiment tracking: a copy of a run folder in MLflow, so runs can be searched and compared in its UI.

The run folder stays the source of truth (see hone.runs); MLflow only gets a snapshot of it. The default
store is a SQLite file in the project's `.hone/` folder with artifacts beside it, so tracking needs no
server and no network; HONE_TRACKING_URI (or an explicit URI) points elsewhere.

Every call to `log_run` makes a new MLflow run, even for a run folder logged before: the MLflow run is a
snapshot taken at that moment (a still running run can be logged again once it has finished), and the
manifest's `tracking.run_id` always names the latest snapshot. mlflow is imported inside the functions
that need it because importing it takes seconds, which every other hone command would otherwise pay.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from hone import contract
from hone.contract import CodeVersion, Manifest, TrainingMetrics
from hone.runs import METRICS, RunFolder, inside_run, read_history

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    from rich.console import Console

    from hone.config import HoneConfig

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "HONE_TRACKING_URI"
PARAM_VALUE_LIMIT = 500  # the smallest limit any MLflow server enforces (newer ones allow 6000)
KEY_LIMIT = 250  # MLflow's limit on param and metric key length
PARAMS_PER_BATCH = 100  # MLflow's log_batch limits
METRICS_PER_BATCH = 1000
FILES = ("manifest.json", "config.yaml", METRICS, "history.jsonl", "ladder.json", "report.html")
WEIGHT_FOLDERS = ("adapter", "model")
# MLflow's portable key characters (it also allows ':' except on Windows, so a store stays readable there)
NOT_IN_KEY = re.compile(r"[^\w.\- /]")
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED"}

T = TypeVar("T")


def default_tracking_uri() -> str:
    """HONE_TRACKING_URI, else SQLite in `.hone/` of the current project: offline, nothing to set up."""
    if os.environ.get(TRACKING_URI_ENV):
        return os.environ[TRACKING_URI_ENV]
    folder = Path.cwd() / ".hone"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'mlflow.db'}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative ones against the cwd); None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path).resolve()


def mlflow_client(uri: str) -> MlflowClient:
    """A client of the store at `uri`, its tables created and migrated.

    A new SQLite store is created under a file lock beside it: MLflow's schema migrations race when two
    processes create one store at once (one of them fails mid-migration), and two `hone registry add`s or
    two runs finishing together on a fresh project must both land.
    """
    from mlflow.tracking import MlflowClient

    database = sqlite_file(uri)
    if database is None:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(f"{database.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)  # creates the tracking tables
            client.search_registered_models(max_results=1)  # and the registry's
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys ({"train": {"seed": 1}} -> {"train.seed": 1}), as MLflow shows them."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def mlflow_key(name: str) -> str:
    """A key MLflow accepts: odd characters become `_`, and no empty, `.` or `..` path parts remain.

    MLflow may store keys as file names, so it refuses keys that a path normalisation would change.
    """
    key = NOT_IN_KEY.sub("_", name)
    key = "/".join(part for part in key.split("/") if part not in ("", ".", ".."))
    return key[:KEY_LIMIT] or "_"


def is_number(value: Any) -> bool:
    """Numbers only: a bool is an int to Python but not a metric."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def param_value(value: Any) -> str:
    """Strings as they are, anything else as JSON (null, true, lists), cut to the portable length."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text[:PARAM_VALUE_LIMIT]


def code_version_text(version: CodeVersion) -> str:
    """One searchable string: `0.1.0@<commit>`, `+dirty` when the checkout had uncommitted changes."""
    text = version.hone
    if version.git_commit:
        text += f"@{version.git_commit}"
        if version.git_dirty:
            text += "+dirty"
    return text


def run_params(run: RunFolder, manifest: Manifest) -> list[Param]:
    """The resolved config as dotted params, plus the lineage (data, base model, code) from the manifest."""
    from mlflow.entities import Param

    config = run.path / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else None
    params = flatten(raw or {})
    lineage = {
        "dataset_hash": manifest.dataset.hash if manifest.dataset else None,
        "base_model": manifest.base_model.reference,
        "code_version": code_version_text(manifest.code_version),
    }
    params.update({key: value for key, value in lineage.items() if value is not None})
    values = {mlflow_key(key): param_value(value) for key, value in params.items()}
    return [Param(key, value) for key, value in sorted(values.items())]


def run_tags(manifest: Manifest) -> dict[str, str]:
    """Tags to filter runs by in the UI; the git commit also fills MLflow's own source column."""
    tags = {
        "hone.run_name": manifest.name,
        "hone.kind": manifest.kind,
        "hone.status": manifest.status,
        "hone.method": manifest.method,
        "hone.adapter": manifest.adapter,
        "mlflow.source.git.commit": manifest.code_version.git_commit,
    }
    return {key: str(value) for key, value in tags.items() if value is not None}


def run_metrics(run: RunFolder) -> list[Metric]:
    """Every number of history.jsonl at its step, then the final scores of metrics.json at step 0.

    One value per key and step is kept (the last): a step's train and eval rows repeat fields such as
    `epoch`, and MLflow would otherwise store both points.
    """
    from mlflow.entities import Metric

    points: dict[tuple[str, int], float] = {}
    for row in read_history(run.path):
        step = row.get("step", 0)
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        for name, value in row.items():
            if name != "step" and is_number(value):
                points[mlflow_key(name), step] = float(value)
    scores = run.path / METRICS
    if scores.is_file():
        summary = contract.to_json(contract.read(TrainingMetrics, scores))
        for name, value in flatten({"training": summary["training"]}).items():
            if is_number(value):
                points[mlflow_key(name), 0] = float(value)
    for name, value in run.manifest.metrics.items():  # the evaluation's headline figures
        points[mlflow_key(name), 0] = float(value)
    stamp = int(time.time() * 1000)
    return [Metric(key, value, stamp, step) for (key, step), value in points.items()]


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, creating it (artifacts in `mlartifacts/` beside a SQLite file) when new.

    A deleted experiment of that name is restored: MLflow keeps the name taken, so it cannot be re-created.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    database = sqlite_file(uri)
    location = (database.parent / "mlartifacts").as_uri() if database else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it in the meantime
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def log_artifacts(client: MlflowClient, run_id: str, run: RunFolder, manifest: Manifest) -> None:
    """The run's record files and its weights folder, each only when present."""
    for name in FILES:
        if (run.path / name).is_file():
            client.log_artifact(run_id, str(run.path / name))
    if (run.path / "eval").is_dir():  # an evaluation's per-example predictions and scores
        client.log_artifacts(run_id, str(run.path / "eval"), artifact_path="eval")
    declared = manifest.artifacts.get("weights")
    for folder in ([declared] if declared else []) + list(WEIGHT_FOLDERS):
        path = inside_run(run.path, folder, "artifacts.weights")
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=Path(folder).name)
            return


def log_run(run_path: Path, tracking_uri: str | None = None, experiment: str = "hone") -> str:
    """Copy a run folder into a new MLflow run; returns its id, which is also written into the manifest.

    The MLflow run ends FINISHED or FAILED like the hone run; one logged while hone is still running stays
    RUNNING, as it was when the snapshot was taken. If logging fails half way the MLflow run is marked
    FAILED, so no half-copied run looks complete.
    """
    run = RunFolder.open(Path(run_path))
    manifest = run.manifest
    uri = tracking_uri or default_tracking_uri()
    client = mlflow_client(uri)
    created = client.create_run(
        experiment_id(client, experiment, uri), run_name=run.path.name, tags=run_tags(manifest)
    )
    run_id = created.info.run_id
    try:
        for params in batches(run_params(run, manifest), PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params)
        for metrics in batches(run_metrics(run), METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics)
        log_artifacts(client, run_id, run, manifest)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    if manifest.status in MLFLOW_STATUS:
        client.set_terminated(run_id, status=MLFLOW_STATUS[manifest.status])
    run.update(tracking={"uri": uri, "experiment": experiment, "run_id": run_id})
    return run_id


def track_completed(run: RunFolder, config: HoneConfig, console: Console) -> None:
    """Copy the finished run into MLflow; a tracking failure is reported, never fatal to the run."""
    try:
        run_id = log_run(run.path, config.track.uri, config.track.experiment)
    except Exception as exc:  # the run folder is complete either way
        logger.warning("MLflow tracking failed: %s", exc)
        console.print(
            f"[yellow]MLflow tracking failed ({type(exc).__name__}: {exc}); the run folder is complete[/]"
        )
        return
    console.print(f"[bold]Tracked[/] in MLflow experiment {config.track.experiment!r}, run {run_id}")
