from __future__ import annotations

import json
from pathlib import Path

import pytest

from hone.config import HoneConfig
from hone.contract import BaseModelRef
from hone.errors import HoneError
from hone.io import atomic_write_text
from hone.runs import MANIFEST, RunFolder


def make_config(tmp_path: Path, name: str = "r1") -> HoneConfig:
    return HoneConfig.model_validate(
        {"data": {"train": "t.jsonl"}, "run": {"name": name, "dir": str(tmp_path)}}
    )


def test_create_writes_config_and_running_manifest(tmp_path: Path) -> None:
    run = RunFolder.create(make_config(tmp_path))
    manifest = json.loads((run.path / MANIFEST).read_text())
    assert manifest["status"] == "running"
    assert manifest["name"] == "r1"
    assert manifest["base_model"]["reference"] == "smollm2-135m-instruct"
    assert manifest["code_version"]["hone"]
    machine = manifest["hardware"]
    assert machine["cpu"] and machine["cpu_threads"] >= 1
    assert machine["cpu_bf16"] in {"AMX", "AVX512-BF16", None}
    assert (run.path / "config.yaml").read_text().startswith("model:")


def test_update_merges_sections_and_finish_records_status(tmp_path: Path) -> None:
    run = RunFolder.create(make_config(tmp_path))
    run.update(base_model={"path": "/x"})
    run.add_artifact("weights", "adapter")
    run.finish("failed", error="boom")
    manifest = RunFolder.open(run.path).manifest
    assert manifest.base_model == BaseModelRef(reference="smollm2-135m-instruct", path="/x")
    assert manifest.artifacts == {"config": "config.yaml", "weights": "adapter"}
    assert manifest.status == "failed" and manifest.error == "boom"


def test_update_refuses_what_the_contract_does_not_allow(tmp_path: Path) -> None:
    run = RunFolder.create(make_config(tmp_path))
    before = (run.path / MANIFEST).read_text()
    with pytest.raises(HoneError, match="status"):
        run.update(status="half-done")
    with pytest.raises(HoneError, match="colour"):
        run.update(colour="blue")
    assert (run.path / MANIFEST).read_text() == before, "a refused update leaves the manifest as it was"


def test_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    RunFolder.create(make_config(tmp_path))
    with pytest.raises(HoneError, match="already exists"):
        RunFolder.create(make_config(tmp_path))


def test_open_rejects_a_folder_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(HoneError, match="not a run folder"):
        RunFolder.open(tmp_path)


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")

    with pytest.raises(TypeError):
        atomic_write_text(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_only_language_model_runs_open_for_generation(tmp_path: Path) -> None:
    from hone.runs import open_language_model_run

    run = RunFolder.create(make_config(tmp_path))
    (run.path / "adapter").mkdir()
    (run.path / "adapter" / "adapter_config.json").write_text("{}")
    run.update(method="reward", artifacts={"weights": "adapter"}, base_model={"path": str(tmp_path)})
    run.finish("completed")
    with pytest.raises(
        HoneError, match=r"r1: a reward run scores text rather than writing it; only .* export"
    ):
        open_language_model_run(run.path, "export")
    run.update(method="sft")
    opened = open_language_model_run(run.path, "export")
    assert opened.method == "sft" and opened.weights == run.path / "adapter"
