"""The loop from production back to a better model, on the tiny model with real components: a quickstart
run registered and promoted in a real MLflow SQLite store, `hone serve` on 127.0.0.1 answering traffic,
a reviewer's feedback with corrections, `hone monitor`, `hone retrain --from-logs` (a dataset version
from the logs, a training run, two ladders, registration, the gate to staging) and the canary route
that then splits traffic between production and the retrained version."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from hone.config import ServeFile, load_config
from hone.data.load import load_split
from hone.quickstart import run_quickstart
from hone.registry.refs import Ref
from hone.registry.store import Registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_registry import EXAMPLE, tiny_config
from test_serve import call, serving


@pytest.fixture
def project(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A quickstart run of the tiny model, registered as support/1 and promoted to production."""
    for split, size in {"train": 16, "validation": 4, "test": 6}.items():
        lines = (EXAMPLE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:size]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("HONE_TRACKING_URI", uri)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    config_path = tiny_config(tmp_path, tiny_model_dir, "first", 1)
    config = yaml.safe_load(config_path.read_text())
    config["registry"] = {"name": "support", "promote_to": "production", "gate": {"general_tolerance": 1.0}}
    config_path.write_text(yaml.safe_dump(config))
    run_quickstart(load_config(config_path), Console(quiet=True))
    serve = {
        "model": {"reference": str(tiny_model_dir)},
        "track": {"uri": uri},
        "serve": {"request_log": f"sqlite:///{tmp_path / 'requests.db'}", "refresh_seconds": 0.2,
                  "routes": {"tickets": {"support@production": 50, "support@staging": 50}}},
        "monitor": {"json_schema": str(EXAMPLE / "schema.json"), "min_requests": 5,
                    "train_split": str(tmp_path / "train.jsonl")},
    }  # fmt: skip
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve))
    return {"folder": tmp_path, "uri": uri, "serve": serve}


def traffic() -> list[dict[str, Any]]:
    """Tickets that are in none of the project's splits (the example's later training examples)."""
    lines = (EXAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines()[100:112]
    return [json.loads(line) for line in lines]


def test_logs_and_corrections_retrain_a_version_that_reaches_staging_and_the_canary(
    project: dict[str, Any],
) -> None:
    from hone.operate.monitor import monitor
    from hone.operate.retrain import retrain

    settings = ServeFile.model_validate(project["serve"])
    tickets = traffic()
    with serving(project["serve"]) as (url, _):
        for index, ticket in enumerate(tickets):
            body = {"model": "support@production", "messages": ticket["messages"][:-1], "max_tokens": 16,
                    "temperature": 0, "user": f"u{index}"}  # fmt: skip
            status, answer, headers = call(url, "/v1/chat/completions", body)
            assert status == 200 and headers["x-hone-model-version"] == "support/1"
            feedback = {"id": answer["id"], "rating": "down", "correction": ticket["messages"][-1]["content"]}
            assert call(url, "/v1/feedback", feedback)[0] == 200  # the tiny model is always wrong

    watched = monitor(settings)
    (production,) = watched.reports
    assert production.requests == len(tickets) and production.mean_rating == 0.0
    assert any(b.figure == "mean_rating" for b in watched.breaches), "the reviewer's verdict is a breach"

    result = retrain(settings, "support", Console(quiet=True), out=project["folder"] / "data" / "versions")

    assert result.production == "support/1" and result.version == "support/2"
    assert result.new_examples == len(tickets) and result.held_out == 2
    merged = Path(result.dataset)
    assert len(load_split(merged / "train.jsonl")) == 16 + len(tickets) - 2
    frozen_test = [e.messages for e in load_split(project["folder"] / "test.jsonl")]
    assert [e.messages for e in load_split(merged / "test.jsonl")] == frozen_test, "the test split is frozen"
    frozen, new = result.slices
    assert (frozen.examples, new.examples) == (6, 2)
    assert all(0.0 <= value <= 1.0 for value in (frozen.production, frozen.retrained, new.retrained))
    assert result.promoted, "the gate let the retrained version into staging"
    registry = Registry(project["uri"])
    assert registry.holder("support", "staging").version == 2
    assert registry.holder("support", "production").version == 1, "production is untouched"
    (record,) = [r for r in registry.history("support") if r.alias == "staging"]
    assert record.action == "promote" and record.to_version == 2
    version = registry.version(Ref("support", 2))
    assert version.tags["hone.dataset_card_version"].startswith(merged.name), (
        "its lineage names the merged data"
    )
    assert json.loads((Path(result.run) / "retrain.json").read_text())["version"] == "support/2"

    with serving(project["serve"]) as (url, _):
        answered = set()
        for index in range(24):
            body = {"model": "tickets", "messages": tickets[0]["messages"][:-1], "max_tokens": 4,
                    "temperature": 0, "user": f"user-{index}"}  # fmt: skip
            answered.add(call(url, "/v1/chat/completions", body)[2]["x-hone-model-version"])
    assert answered == {"support/1", "support/2"}, "the canary route now splits between the two"
    canaries = monitor(settings).canaries
    assert [(c.candidate, c.production) for c in canaries if c.route == "tickets"] in (
        [("support/2", "support/1")],
        [("support/1", "support/2")],
    )
