"""The `hone` command as a user runs it: a real subprocess, real exit codes, output on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def hone(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from hone.cli import main; main()", *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_output_that_is_not_a_terminal_is_drawn_160_columns_wide() -> None:
    command = [sys.executable, "-c", "from hone.cli import main; main()", "estimate", "--model", "1.5B"]
    command += ["--hardware", "h100"]
    environment = {name: value for name, value in os.environ.items() if name != "COLUMNS"}
    piped = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=environment)
    assert piped.returncode == 0, piped.stderr
    widths = [len(line) for line in piped.stdout.splitlines()]
    assert 80 < max(widths) <= 160  # rich alone would cut every line at 80
    environment["COLUMNS"] = "80"
    narrow = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=environment)
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80  # COLUMNS still decides


def test_config_validate_ok_and_bad() -> None:
    ok = hone("config", "validate", "configs/quickstart.yaml")
    assert ok.returncode == 0, ok.stderr
    bad = hone("config", "validate", "configs/quickstart.yaml", "train.adapter.r=zero", "train.epochs=-1")
    assert bad.returncode == 2
    assert "configs/quickstart.yaml: invalid config" in bad.stderr
    assert "train.adapter.r: Input should be a valid integer" in bad.stderr
    assert "train.epochs: Input should be greater than 0" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_an_unknown_option_is_a_usage_error_not_a_traceback() -> None:
    wrong = hone("estimate", "-c", "configs/quickstart.yaml")
    assert wrong.returncode == 2
    assert "No such option: -c" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_config_show_prints_resolved_config_with_overrides() -> None:
    shown = hone("config", "show", "configs/quickstart.yaml", "train.max_steps=3")
    assert shown.returncode == 0, shown.stderr
    assert "max_steps: 3" in shown.stdout
    assert "weight_decay: 0.0" in shown.stdout  # a default spelled out


def test_models_list_shows_the_alias() -> None:
    listed = hone("models", "list")
    assert listed.returncode == 0, listed.stderr
    assert "smollm2-135m-instruct" in listed.stdout


def test_quickstart_with_bad_data_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"messages": [{"role": "bot", "content": "x"}]}\n')
    (tmp_path / "test.jsonl").write_text("{oops\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"# hone quickstart -c {config}\n"
        f"data: {{train: {tmp_path / 'train.jsonl'}, test: {tmp_path / 'test.jsonl'}}}\n"
        f"run: {{dir: {tmp_path / 'runs'}}}\n"
    )
    result = hone("quickstart", "-c", str(config))
    assert result.returncode == 2
    assert f"{tmp_path / 'train.jsonl'} line 1: messages[0].role: role 'bot'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def ladder_config(tmp_path: Path, model: Path, task: dict[str, Path], extra: str = "") -> Path:
    config = tmp_path / "ladder.yaml"
    config.write_text(
        f"# hone evaluate -c {config}\n"
        f'model: {{reference: "{model}"}}\n'
        f"data: {{train: {task['train']}, test: {task['test']}}}\n"
        f"evaluate: {{json_schema: {task['schema']}, max_new_tokens: 4, batch_size: 8, "
        f"few_shot: {{k: 2}}{extra}}}\n"
        f"run: {{dir: {tmp_path / 'runs'}, name: ladder}}\n"
    )
    return config


def test_evaluate_json_prints_the_ladder(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    import json

    result = hone("evaluate", "-c", str(ladder_config(tmp_path, tiny_model_dir, small_task)), "--json")
    assert result.returncode == 0, result.stderr
    ladder = json.loads(result.stdout)  # stdout holds the JSON alone; progress went to stderr
    assert [rung["name"] for rung in ladder["rungs"]] == ["zero-shot", "few-shot"]
    assert ladder["recommendation"]["rung"] in ("zero-shot", "few-shot")
    manifest = json.loads((tmp_path / "runs" / "ladder" / "manifest.json").read_text())
    assert manifest["kind"] == "evaluation" and manifest["status"] == "completed"
    assert (tmp_path / "runs" / "ladder" / "report.html").is_file()


def test_evaluate_bad_input_exits_2_before_any_run_folder(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    config = ladder_config(tmp_path, tiny_model_dir, small_task, ", target: {metric: bleu, min: 10}")
    not_a_run = tmp_path / "nothing"
    not_a_run.mkdir()
    result = hone("evaluate", "-c", str(config), "--candidate", str(not_a_run))
    assert result.returncode == 2
    assert f"{not_a_run}: not a run folder (no manifest.json)" in result.stderr
    assert not (tmp_path / "runs").exists()
    unknown_metric = hone("evaluate", "-c", str(config))
    assert unknown_metric.returncode == 2
    assert "evaluate.target.metric: 'bleu' is not among this task's metrics" in unknown_metric.stderr


def test_evaluate_refuses_a_truncated_candidate_before_any_rung_runs(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    from rich.console import Console

    from hone.config import load_config
    from hone.train.pipeline import run_training

    config = ladder_config(tmp_path, tiny_model_dir, small_task)
    settings = ["run.name=tuned", "train.max_steps=1", "train.batch_size=4", "train.precision=fp32"]
    trained = run_training(load_config(config, settings), Console(width=160), track=False)
    weights = trained.path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    result = hone("evaluate", "-c", str(config), "--candidate", str(trained.path))

    assert result.returncode == 2, result.stderr
    assert f"error: {weights}: truncated or corrupt: its header describes" in result.stderr
    assert "Traceback" not in result.stderr
    evaluation = tmp_path / "runs" / "ladder"
    assert not evaluation.exists(), "refused before the evaluation run folder, so no rung wrote predictions"


def test_config_validate_names_every_missing_path_and_an_unknown_format(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"# hone config validate {config}\n"
        "model: {reference: models/missing.gguf}\n"
        "data: {train: data/train.jsonl, test: data/test.jsonl}\n"
        "evaluate: {json_schema: schema.json, rag: {knowledge: knowledge}}\n"
        "train: {method: rl, rl: {reward: reward.py:score}}\n"
    )
    missing = hone("config", "validate", str(config), cwd=tmp_path)
    assert missing.returncode == 2, missing.stdout
    assert f"{config}: the config names what is not there" in missing.stderr
    for field, path in [
        ("data.train", "data/train.jsonl"),
        ("data.test", "data/test.jsonl"),
        ("model.reference", "models/missing.gguf"),
        ("evaluate.json_schema", "schema.json"),
        ("evaluate.rag.knowledge", "knowledge"),
        ("train.rl.reward", "reward.py"),
    ]:
        assert f"  {field}: {path}: " in missing.stderr, field
    assert "Traceback" not in missing.stderr

    for name in ("data", "knowledge", "models"):
        (tmp_path / name).mkdir()
    for name in ("data/train.jsonl", "data/test.jsonl", "schema.json", "knowledge/faq.md", "reward.py"):
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "models" / "missing.gguf").write_text("GGUF")
    assert hone("config", "validate", str(config), cwd=tmp_path).returncode == 0

    unknown = hone("config", "validate", str(config), "data.format=jsonl", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "data.format: Input should be 'auto', 'messages', 'alpaca'" in unknown.stderr
    assert "(got 'jsonl')" in unknown.stderr
