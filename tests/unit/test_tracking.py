"""Tracking into a real MLflow store on SQLite in a temp folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hone.config import HoneConfig
from hone.io import atomic_write_json, atomic_write_jsonl
from hone.runs import RunFolder
from hone.tracking import default_tracking_uri, flatten, log_run


@pytest.fixture
def finished_run(tmp_path: Path) -> RunFolder:
    config = HoneConfig.model_validate(
        {
            "data": {"train": "t.jsonl"},
            "train": {"learning_rate": 0.001},
            "run": {"name": "r", "dir": str(tmp_path)},
        }
    )
    run = RunFolder.create(config)
    atomic_write_jsonl(
        run.path / "history.jsonl",
        [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "eval_loss": 1.4}, {"step": 3, "loss": 1.0}],
    )
    atomic_write_json(
        run.path / "metrics.json", {"fine-tuned": {"exact_match": 0.88, "field_accuracy": {"a": 0.5}}}
    )
    (run.path / "adapter").mkdir()
    (run.path / "adapter" / "adapter_config.json").write_text("{}")
    run.update(dataset={"hash": "abc123"}, artifacts={"weights": "adapter"})
    run.finish("completed")
    return run


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_default_uri_is_sqlite_in_dot_hone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HONE_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{tmp_path / '.hone' / 'mlflow.db'}"
    monkeypatch.setenv("HONE_TRACKING_URI", "sqlite:///x.db")
    assert default_tracking_uri() == "sqlite:///x.db"


def test_log_run_params_metrics_artifacts_and_manifest(finished_run: RunFolder, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_run(finished_run.path, uri, experiment="tests")
    client = MlflowClient(tracking_uri=uri)
    logged = client.get_run(run_id)
    assert logged.data.params["train.learning_rate"] == "0.001"
    assert logged.data.params["dataset_hash"] == "abc123"
    assert logged.data.tags["hone.status"] == "completed"
    assert logged.info.status == "FINISHED"
    losses = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert losses == [(1, 2.0), (2, 1.5), (3, 1.0)]
    assert logged.data.metrics["fine-tuned.exact_match"] == pytest.approx(0.88)
    assert logged.data.metrics["fine-tuned.field_accuracy.a"] == pytest.approx(0.5)
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    assert {"manifest.json", "config.yaml", "metrics.json", "history.jsonl", "adapter"} <= artifacts
    assert (tmp_path / "mlartifacts").is_dir()
    tracking = json.loads((finished_run.path / "manifest.json").read_text())["tracking"]
    assert tracking == {"uri": uri, "experiment": "tests", "run_id": run_id}
    second = log_run(finished_run.path, uri, experiment="tests")
    assert second != run_id
    assert len(client.search_runs([logged.info.experiment_id])) == 2
