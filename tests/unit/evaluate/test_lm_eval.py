from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch

from hone.errors import HoneError
from hone.evaluate.lm_eval import resolve_data_paths, run_lm_eval, scores_from_results

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "lm_eval"
TASK = "hone_tiny_choice"

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Refuse every outgoing connection and record the attempts: a local task must need none."""
    attempts: list[object] = []

    def refuse(_socket: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_local_task_runs_offline_from_another_directory(
    tiny_model, tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[object]
) -> None:
    """The task's data_files path is relative to its YAML, so the working directory does not matter."""
    tasks = tmp_path / "tasks"
    shutil.copytree(ASSETS, tasks)
    monkeypatch.chdir(tmp_path)
    scores = run_lm_eval(tiny_model, tokenizer, [TASK], include_path=tasks, limit=None, batch_size=4)
    assert set(scores) == {TASK}
    assert 0.0 <= scores[TASK]["acc"] <= 1.0
    assert scores[TASK]["acc"] * 10 == pytest.approx(round(scores[TASK]["acc"] * 10))  # ten questions
    assert "acc_stderr" in scores[TASK]
    assert no_network == []


def test_limit_caps_the_examples(tiny_model, tokenizer) -> None:
    scores = run_lm_eval(tiny_model, tokenizer, [TASK], include_path=ASSETS, limit=4, batch_size=4)
    assert scores[TASK]["acc"] in {0.0, 0.25, 0.5, 0.75, 1.0}


def test_unknown_task_is_a_hone_error(tiny_model, tokenizer) -> None:
    with pytest.raises(HoneError, match="'no_such_task' not found"):
        run_lm_eval(tiny_model, tokenizer, ["no_such_task"], include_path=ASSETS, limit=2, batch_size=2)


def test_missing_include_folder_is_a_hone_error(tiny_model, tokenizer, tmp_path: Path) -> None:
    with pytest.raises(HoneError, match="not a folder"):
        run_lm_eval(tiny_model, tokenizer, [TASK], include_path=tmp_path / "absent", limit=2, batch_size=2)


def test_missing_local_data_is_a_hone_error(tiny_model, tokenizer, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    shutil.copytree(ASSETS, tasks)
    (tasks / f"{TASK}.jsonl").unlink()
    with pytest.raises(HoneError, match="could not load the data"):
        run_lm_eval(tiny_model, tokenizer, [TASK], include_path=tasks, limit=2, batch_size=2)


def test_missing_harness_names_the_extra(tiny_model, tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what `import lm_eval` meets when it is not installed
    with pytest.raises(HoneError, match=r"pip install 'hone\[lmeval\]'"):
        run_lm_eval(tiny_model, tokenizer, [TASK], include_path=ASSETS, limit=2, batch_size=2)


def test_resolve_data_paths_only_touches_relative_local_paths(tmp_path: Path) -> None:
    (tmp_path / "local_dataset").mkdir()
    config = {
        "task": "t",
        "dataset_path": "local_dataset",
        "dataset_kwargs": {
            "data_files": {"test": "data/test.jsonl", "train": ["/abs/train.jsonl", "https://host/x.jsonl"]}
        },
    }
    resolved = resolve_data_paths(config, tmp_path)
    assert resolved["dataset_path"] == str(tmp_path / "local_dataset")
    assert resolved["dataset_kwargs"]["data_files"] == {
        "test": str(tmp_path / "data" / "test.jsonl"),
        "train": ["/abs/train.jsonl", "https://host/x.jsonl"],
    }
    assert config["dataset_kwargs"]["data_files"]["test"] == "data/test.jsonl"  # the input is not changed
    hub = {"task": "h", "dataset_path": "allenai/sciq"}
    assert resolve_data_paths(hub, tmp_path) == hub


def test_scores_keep_numeric_metrics_only() -> None:
    results = {
        "gsm": {
            "alias": "gsm",
            "sample_len": 10,
            "exact_match,strict-match": 0.5,
            "exact_match_stderr,strict-match": "N/A",
            "acc,none": 0.25,
        }
    }
    assert scores_from_results(results) == {"gsm": {"exact_match,strict-match": 0.5, "acc": 0.25}}
