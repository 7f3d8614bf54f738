"""Experiment tracking: every run's params, metrics and artifacts in MLflow, offline by default.

The run folder stays the source of truth (see hone.runs); MLflow gets a copy that its UI and registry
can search and compare. By default the store is SQLite in the project's `.hone/` folder with artifacts
beside it, so tracking needs no server and no network; `track.uri` or HONE_TRACKING_URI point elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from hone.runs import RunFolder

PARAM_LIMIT = 500  # MLflow's limit on a param value's length
UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
ARTIFACT_FILES = ("manifest.json", "config.yaml", "metrics.json", "history.jsonl")


def default_tracking_uri() -> str:
    """HONE_TRACKING_URI, else SQLite in `.hone/` under the current directory."""
    if os.environ.get("HONE_TRACKING_URI"):
        return os.environ["HONE_TRACKING_URI"]
    folder = Path(".hone").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: {"train": {"lr": 1}} -> {"train.lr": 1}."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def metric_key(name: str) -> str:
    return UNSAFE_KEY.sub("_", name)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def experiment_id(client: Any, name: str, uri: str) -> str:
    """The experiment's id, creating it with artifacts next to a SQLite store when it is new."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def run_params(run: RunFolder) -> list[Any]:
    from mlflow.entities import Param

    manifest = run.manifest
    params = flatten(yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8")) or {})
    params["dataset_hash"] = manifest.get("dataset", {}).get("hash")
    params["base_model"] = manifest.get("base_model", {}).get("reference")
    params["code_version"] = (
        manifest.get("code_version", {}).get("git_commit") or manifest["code_version"]["hone"]
    )
    return [Param(key, str(value)[:PARAM_LIMIT]) for key, value in sorted(params.items())]


def run_metrics(run: RunFolder) -> list[Any]:
    """Every numeric value of the loss history at its step, then the final evaluation scores."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    metrics = []
    history = run.path / "history.jsonl"
    if history.is_file():
        for line in history.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            step = int(row.get("step", 0))
            for name, value in row.items():
                if name != "step" and is_number(value):
                    metrics.append(Metric(metric_key(name), float(value), stamp, step))
    scores = run.path / "metrics.json"
    if scores.is_file():
        for name, value in flatten(json.loads(scores.read_text(encoding="utf-8"))).items():
            if is_number(value):
                metrics.append(Metric(metric_key(name), float(value), stamp, 0))
    return metrics


def log_run(run_path: Path, uri: str | None = None, experiment: str = "hone") -> str:
    """Copy a run folder into MLflow (params, metrics, tags, artifacts); returns the MLflow run id.

    The id is written into the manifest (`tracking`), so the registry can find the MLflow run later.
    """
    from mlflow.tracking import MlflowClient

    run = RunFolder.open(run_path)
    manifest = run.manifest
    uri = uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    tags = {
        "mlflow.runName": manifest["name"],
        "hone.status": manifest.get("status", ""),
        "hone.method": manifest.get("method", ""),
        "hone.adapter": manifest.get("adapter", ""),
    }
    created = client.create_run(experiment_id(client, experiment, uri), tags=tags)
    run_id = created.info.run_id
    metrics = run_metrics(run)
    client.log_batch(run_id, params=run_params(run))
    for start in range(0, len(metrics), 900):  # MLflow takes at most 1000 entries per batch
        client.log_batch(run_id, metrics=metrics[start : start + 900])
    for name in ARTIFACT_FILES:
        if (run.path / name).is_file():
            client.log_artifact(run_id, str(run.path / name))
    weights = manifest.get("artifacts", {}).get("weights")
    if weights and (run.path / weights).is_dir():
        client.log_artifacts(run_id, str(run.path / weights), artifact_path=weights)
    client.set_terminated(run_id, status="FINISHED" if manifest.get("status") == "completed" else "FAILED")
    run.update(tracking={"uri": uri, "experiment": experiment, "run_id": run_id})
    return run_id
