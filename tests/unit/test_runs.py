from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hone.config import HoneConfig, load_config
from hone.contract import BaseModelRef
from hone.errors import HoneError
from hone.io import atomic_write_text
from hone.runs import MANIFEST, RunFolder, Terminated, failure_recorded, open_finished_run


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


# A run stays inside run.dir, and a manifest's paths stay inside its run -------------------------------

REPO = Path(__file__).resolve().parents[2]


def hone(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from hone.cli import main; main()", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


@pytest.mark.parametrize("name", ["../../escaped", "{tmp}/absolute"])
def test_train_refuses_a_run_name_that_is_not_one_folder(tmp_path: Path, name: str) -> None:
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "x"}]}\n')
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{train: {tmp_path / 'train.jsonl'}}}\nrun: {{dir: {tmp_path / 'deep/er/runs'}}}\n"
    )
    before = files_under(tmp_path)

    result = hone("train", "-c", str(config), f"run.name={name.format(tmp=tmp_path)}")

    assert result.returncode == 2, result.stderr
    assert "run.name: Value error, must be one folder name inside run.dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert files_under(tmp_path) == before, "nothing was written, inside run.dir or outside it"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("x/y/z", "must be one folder name"),
        ("a\\b", "must be one folder name"),
        ("..", "not '.' or '..'"),
        (".", "not '.' or '..'"),
        ("nul\0byte", "control characters"),
        ("", "1 to 128 characters"),
        ("x" * 129, "1 to 128 characters"),
    ],
)
def test_config_refuses_every_run_name_that_is_not_one_folder(tmp_path: Path, name: str, reason: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{train: t.jsonl}}\nrun: {{name: {json.dumps(name)}}}\n")
    with pytest.raises(
        HoneError, match=rf"{config}: invalid config\n  run\.name: Value error, .*{re.escape(reason)}"
    ):
        load_config(config)


def test_run_folder_refuses_a_name_given_by_the_caller(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    for name in ("../outside", "a/b", "..", "x" * 129, "nul\0byte"):
        with pytest.raises(HoneError, match=r"run\.name"):
            RunFolder.create(config, "evaluation", name=name)
    assert list(tmp_path.iterdir()) == []
    assert RunFolder.create(config, "evaluation", name="r1-ladder").path == tmp_path / "r1-ladder"


def completed_run_with_weights(tmp_path: Path, weights: str) -> RunFolder:
    """A completed run whose manifest points its weights at `weights`; a loadable-looking adapter folder
    waits outside the run, so following the path would find something."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "adapter_config.json").write_text("{}")
    run = RunFolder.create(make_config(tmp_path / "runs"))
    run.update(method="sft", base_model={"path": str(tmp_path)}, artifacts={"weights": weights})
    run.finish("completed")
    return run


@pytest.mark.parametrize("weights", ["../../outside", "{tmp}/outside"])
def test_export_and_evaluate_refuse_weights_outside_the_run(
    tmp_path: Path, weights: str, small_task: dict[str, Path]
) -> None:
    run = completed_run_with_weights(tmp_path, weights.format(tmp=tmp_path))
    config = tmp_path / "ladder.yaml"
    config.write_text(
        f"data: {{train: {small_task['train']}, test: {small_task['test']}}}\n"
        f"run: {{dir: {tmp_path / 'evaluations'}}}\n"
    )
    before = files_under(tmp_path)

    exported = hone("export", str(run.path), "--merge")
    assert exported.returncode == 2, exported.stderr
    assert f"{run.path / MANIFEST}: artifacts.weights: " in exported.stderr
    assert "leads outside the run folder" in exported.stderr
    assert "Traceback" not in exported.stderr

    evaluated = hone("evaluate", "-c", str(config), "--candidate", str(run.path))
    assert evaluated.returncode == 2, evaluated.stderr
    assert f"{run.path / MANIFEST}: artifacts.weights: " in evaluated.stderr
    assert files_under(tmp_path) == before, "no export folder, no evaluation run"


def test_weights_inside_the_run_are_followed_and_a_link_out_is_not(tmp_path: Path) -> None:
    run = completed_run_with_weights(tmp_path, "adapter")
    (run.path / "adapter").mkdir()
    (run.path / "adapter" / "adapter_config.json").write_text("{}")
    assert open_finished_run(run.path, "export").weights == run.path / "adapter"
    run.update(artifacts={"weights": "adapter/../../../outside"})
    with pytest.raises(HoneError, match="leads outside the run folder"):
        open_finished_run(run.path, "export")
    run.update(artifacts={"weights": "adapter"})
    shutil.rmtree(run.path / "adapter")
    (run.path / "adapter").symlink_to(tmp_path / "outside")  # inside by name, outside in fact
    with pytest.raises(HoneError, match=r"artifacts\.weights: 'adapter' leads outside the run folder"):
        open_finished_run(run.path, "export")


def test_reward_model_weights_outside_the_run_are_refused(tmp_path: Path) -> None:
    from hone.train.reward import load_reward_model

    run = completed_run_with_weights(tmp_path, "../../outside")
    run.update(method="reward")
    with pytest.raises(HoneError, match=r"artifacts\.weights: '\.\./\.\./outside' leads outside"):
        load_reward_model(run.path)


def test_run_links_reach_only_a_sibling_run_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    training = RunFolder.create(make_config(runs, "r1"))
    evaluation = RunFolder.create(make_config(runs, "r1"), "evaluation", name="r1-ladder")
    training.update(evaluation={"status": "completed", "run": "../r1-ladder"})
    evaluation.update(evaluates="../r1")
    assert training.evaluation_run() == training.path / "../r1-ladder"
    assert training.evaluation_run().resolve() == evaluation.path.resolve()
    assert evaluation.evaluated_run().resolve() == training.path.resolve()

    (tmp_path / "elsewhere").mkdir()
    (runs / "linked").symlink_to(tmp_path / "elsewhere")
    for link in (
        "../../elsewhere",
        str(tmp_path / "elsewhere"),
        "../r1-ladder/../../elsewhere",
        "..",
        "../linked",
    ):
        training.update(evaluation={"status": "completed", "run": link})
        with pytest.raises(HoneError, match=r"evaluation\.run: .* is not a run folder beside this one"):
            training.evaluation_run()
        evaluation.update(evaluates=link)
        with pytest.raises(HoneError, match=r"evaluates: .* is not a run folder beside this one"):
            evaluation.evaluated_run()


def test_sigterm_in_the_block_marks_the_run_failed_and_the_handler_is_put_back(tmp_path: Path) -> None:
    run = RunFolder.create(make_config(tmp_path))
    before = signal.getsignal(signal.SIGTERM)
    linked: list[str] = []
    with pytest.raises(Terminated) as stopped, failure_recorded(run, also=linked.append):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode; the sleep is cut short
    assert stopped.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    manifest = run.manifest
    assert manifest.status == "failed" and manifest.error == "Terminated: terminated by SIGTERM"
    assert linked == ["Terminated: terminated by SIGTERM"]


def test_a_block_that_succeeds_or_a_process_that_does_not_record_leaves_the_status(tmp_path: Path) -> None:
    run = RunFolder.create(make_config(tmp_path))
    with failure_recorded(run):
        run.finish("completed")
    assert run.manifest.status == "completed"
    other = RunFolder.create(make_config(tmp_path, "r2"))
    with pytest.raises(ValueError, match="boom"), failure_recorded(other, record=False):
        raise ValueError("boom")
    assert other.manifest.status == "running", "only the main process writes the manifest"
