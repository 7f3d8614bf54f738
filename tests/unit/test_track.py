"""hone.track against a real MLflow store on SQLite in a temp folder, read back with MlflowClient."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hone import contract
from hone.config import HoneConfig
from hone.contract import TrainingMetrics, TrainingSummary
from hone.errors import HoneError
from hone.runs import RunFolder
from hone.track import default_tracking_uri, log_run, mlflow_key

HISTORY = [
    {
        "step": 5,
        "epoch": 0.06,
        "loss": 1.19,
        "learning_rate": 0.00075,
        "grad_norm": 0.7,
        "tokens_per_second": 188.4,
    },
    {"step": 10, "epoch": 0.12, "loss": 0.52, "learning_rate": 0.0005, "grad_norm": 0.4},
    {"step": 10, "epoch": 0.12, "eval_loss": 0.31, "eval/runtime (s)": 2.5},
    {"step": 15, "epoch": 0.18, "loss": 0.2, "learning_rate": 0.00025, "grad_norm": 0.2, "note": "text"},
]
TRAINING = TrainingSummary(
    steps=15,
    train_loss=0.4,
    seconds=12.5,
    trained_tokens=3000,
    truncated_examples=0,
    distributed="NO",
    precision="bf16",
    attention="sdpa",
    layout="padded",
)
HEADLINE = {"json_valid": 1.0, "exact_match": 0.875, "category_accuracy": 0.95}  # from the run's evaluation


def make_run(root: Path, name: str, finished: bool = True) -> RunFolder:
    """A run folder as training and evaluation leave it, or (finished=False) as it is right after start."""
    config = {
        "data": {"train": "train.jsonl", "system_prompt": "p" * 600},
        "train": {"learning_rate": 1e-4, "adapter": {"kind": "lora", "r": 8}},
        "run": {"name": name, "dir": str(root / "runs")},
    }
    run = RunFolder.create(HoneConfig.model_validate(config))
    if finished:
        (run.path / "history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in HISTORY))
        contract.write(TrainingMetrics(training=TRAINING), run.path / "metrics.json")
        (run.path / "adapter").mkdir()
        (run.path / "adapter" / "adapter_config.json").write_text('{"r": 8}')
        run.update(
            dataset={"hash": "d" * 64, "splits": {}},
            training=TRAINING,
            metrics=HEADLINE,
            artifacts={"weights": "adapter"},
        )
        run.finish("completed")
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One SQLite store for the module (creating its schema is the slow part); a finished run logged to it."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("track")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONE_HOME", str(root / "home"))
        patch.chdir(root)
        run = make_run(root, "finished")
        run_id = log_run(run.path, uri)
    return {
        "root": root,
        "uri": uri,
        "run": run,
        "run_id": run_id,
        "manifest": run.manifest,
        "client": MlflowClient(tracking_uri=uri),
    }


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HONE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def test_default_uri_is_sqlite_in_the_project_hone_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HONE_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / '.hone' / 'mlflow.db'}"
    assert (tmp_path / ".hone").is_dir()


def test_environment_overrides_the_default_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HONE_TRACKING_URI", "http://mlflow.example:5000")
    assert default_tracking_uri() == "http://mlflow.example:5000"
    assert not (tmp_path / ".hone").exists()


def test_keys_are_made_acceptable_to_mlflow() -> None:
    assert mlflow_key("fine-tuned.field_accuracy.category") == "fine-tuned.field_accuracy.category"
    assert mlflow_key("eval/runtime (s)") == "eval/runtime _s_"
    assert mlflow_key("/a//b/../c:d") == "a/b/c_d"
    assert mlflow_key("..") == "_"


def test_params_hold_the_dotted_config_and_lineage(store: dict[str, Any]) -> None:
    params = store["client"].get_run(store["run_id"]).data.params
    assert params["train.learning_rate"] == "0.0001"
    assert params["train.adapter.kind"] == "lora" and params["train.adapter.r"] == "8"
    assert params["evaluate.json_schema"] == "null"
    assert params["dataset_hash"] == "d" * 64
    assert params["base_model"] == "smollm2-135m-instruct"
    assert params["code_version"].startswith(store["manifest"].code_version.hone)
    assert params["data.system_prompt"] == "p" * 500


def test_history_is_logged_at_its_steps(store: dict[str, Any]) -> None:
    client = store["client"]
    loss = client.get_metric_history(store["run_id"], "loss")
    assert sorted((m.step, m.value) for m in loss) == [(5, 1.19), (10, 0.52), (15, 0.2)]
    epoch = client.get_metric_history(store["run_id"], "epoch")
    assert sorted(m.step for m in epoch) == [5, 10, 15]
    assert [m.value for m in client.get_metric_history(store["run_id"], "eval_loss")] == [0.31]
    assert client.get_metric_history(store["run_id"], "eval/runtime _s_")[0].step == 10


def test_final_scores_are_flattened_numbers(store: dict[str, Any]) -> None:
    metrics = store["client"].get_run(store["run_id"]).data.metrics
    assert metrics["exact_match"] == 0.875
    assert metrics["json_valid"] == 1.0
    assert metrics["category_accuracy"] == 0.95
    assert metrics["training.steps"] == 15 and metrics["training.train_loss"] == 0.4
    assert "training.precision" not in metrics and "training.layout" not in metrics, "only numbers"


def test_tags_name_and_status(store: dict[str, Any]) -> None:
    logged = store["client"].get_run(store["run_id"])
    assert logged.info.run_name == "finished"
    assert logged.info.status == "FINISHED"
    tags = logged.data.tags
    assert tags["hone.run_name"] == "finished" and tags["hone.status"] == "completed"
    assert tags["hone.method"] == "sft" and tags["hone.adapter"] == "lora"


def test_artifacts_are_copied_next_to_the_database(store: dict[str, Any]) -> None:
    client, run_id = store["client"], store["run_id"]
    names = {item.path for item in client.list_artifacts(run_id)}
    assert names == {"manifest.json", "config.yaml", "metrics.json", "history.jsonl", "adapter"}
    assert [item.path for item in client.list_artifacts(run_id, "adapter")] == ["adapter/adapter_config.json"]
    experiment = client.get_experiment_by_name("hone")
    assert experiment.artifact_location == (store["root"] / "mlartifacts").resolve().as_uri()


def test_manifest_records_the_tracking_run(store: dict[str, Any]) -> None:
    tracking = store["manifest"].tracking
    assert tracking is not None
    assert tracking.model_dump() == {"uri": store["uri"], "experiment": "hone", "run_id": store["run_id"]}


def test_logging_again_makes_a_new_run_in_the_same_experiment(store: dict[str, Any]) -> None:
    client = store["client"]
    again = log_run(store["run"].path, store["uri"])
    assert again != store["run_id"]
    first, second = client.get_run(store["run_id"]), client.get_run(again)
    assert first.info.experiment_id == second.info.experiment_id
    assert second.data.params["dataset_hash"] == "d" * 64
    assert store["run"].manifest.tracking.run_id == again


def test_a_running_run_logs_what_exists_and_stays_running(tmp_path: Path, store: dict[str, Any]) -> None:
    run = make_run(tmp_path, "started", finished=False)
    run_id = log_run(run.path, store["uri"], experiment="in-progress")
    logged = store["client"].get_run(run_id)
    assert logged.info.status == "RUNNING"
    assert logged.data.tags["hone.status"] == "running"
    assert "dataset_hash" not in logged.data.params and logged.data.metrics == {}
    assert {item.path for item in store["client"].list_artifacts(run_id)} == {"manifest.json", "config.yaml"}
    experiment = store["client"].get_experiment_by_name("in-progress")
    assert logged.info.experiment_id == experiment.experiment_id


def test_broken_history_lines_are_skipped_with_a_warning(
    tmp_path: Path, store: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    run = make_run(tmp_path, "cut-short")
    history = run.path / "history.jsonl"
    rows = ['{"step": 1, "loss": 2.5}', "[1, 2]", '{"step": "x", "loss": 9.0}', '{"step": 2, "loss": 2.0}']
    history.write_text("\n".join(rows) + '\n{"step": 3, "lo')  # a copy cut off mid-line
    run_id = log_run(run.path, store["uri"], experiment="cut-short")
    losses = store["client"].get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in losses) == [(1, 2.5), (2, 2.0)]
    assert f"{history} line 2: not a JSON object; skipped" in caplog.text
    assert f"{history} line 5: not a JSON object; skipped" in caplog.text


def test_weights_outside_the_run_are_refused_and_the_mlflow_run_fails(
    tmp_path: Path, store: dict[str, Any]
) -> None:
    run = make_run(tmp_path, "escaping")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("not the run's")
    run.update(artifacts={"weights": "../../outside"})
    with pytest.raises(HoneError, match=r"artifacts\.weights: '\.\./\.\./outside' leads outside the run"):
        log_run(run.path, store["uri"], experiment="escaping")
    client = store["client"]
    (logged,) = client.search_runs([client.get_experiment_by_name("escaping").experiment_id])
    assert logged.info.status == "FAILED"
    assert "outside" not in {item.path for item in client.list_artifacts(logged.info.run_id)}


def test_default_store_is_created_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HONE_TRACKING_URI", raising=False)
    run = make_run(tmp_path, "local", finished=False)
    log_run(run.path)
    assert (tmp_path / ".hone" / "mlflow.db").is_file()
    assert run.manifest.tracking.uri == f"sqlite:///{tmp_path.resolve() / '.hone' / 'mlflow.db'}"
