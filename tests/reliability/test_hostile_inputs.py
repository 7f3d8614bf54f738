"""Hostile and broken input through the real `hone` command: exit code 2 and one clear error naming the file
(and line and field where there is one), never a traceback, never unbounded work, nothing half-written.

Cases that could hang a process (a FIFO, a link to /dev/zero) run `hone` as a subprocess with a timeout;
the rest call the real entry point in-process, where a traceback surfaces as the exception itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from completed_runs import lora_run
from hone.cli import main

REPO = Path(__file__).resolve().parents[2]
GOOD_CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
MAX_ERROR_BYTES = 2000  # any one of these errors fits in a few lines


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Exit code and stderr of `hone ARGS`, run through the real entry point."""
    monkeypatch.setattr(sys, "argv", ["hone", *args])
    monkeypatch.setenv("COLUMNS", "400")  # one error per line, whatever its length
    with pytest.raises(SystemExit) as exited:
        main()
        raise SystemExit(0)
    return int(exited.value.code or 0), capsys.readouterr().err


def hone_process(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from hone.cli import main; main()", *args]
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def refused(code: int, stderr: str, *expected: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr) < MAX_ERROR_BYTES, stderr[:MAX_ERROR_BYTES]
    message = " ".join(stderr.split())
    for text in expected:
        assert text in message, message


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# hone config validate ------------------------------------------------------------------------------


def test_config_that_is_not_utf8_names_the_line_and_byte(monkeypatch, capsys, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"# hone config validate bad.yaml\nmodel:\n  reference: caf\xe9\n")
    code, stderr = run_cli(monkeypatch, capsys, "config", "validate", str(config))
    refused(code, stderr, f"{config} line 3: not UTF-8: byte 0xe9 at byte offset 55")


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for index in range(1, levels):
        previous, name = chr(ord("a") + index - 1), chr(ord("a") + index)
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_without_expanding_it(monkeypatch, capsys, tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(billion_laughs())
    assert config.stat().st_size < 400  # 9^9 values once expanded
    code, stderr = run_cli(monkeypatch, capsys, "config", "validate", str(config))
    refused(code, stderr, f"{config} line 6: its aliases expand to more than 100,000 values")


def test_yaml_alias_that_contains_itself_is_refused(monkeypatch, capsys, tmp_path: Path) -> None:
    config = tmp_path / "loop.yaml"
    config.write_text("model: {reference: x}\ndata: &d {train: [*d]}\n")
    code, stderr = run_cli(monkeypatch, capsys, "config", "validate", str(config))
    refused(code, stderr, f"{config} line 2: an alias refers to the value that contains it")


def test_yaml_nested_100000_deep_is_refused(monkeypatch, capsys, tmp_path: Path) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text("data: " + "[" * 100_000 + "]" * 100_000 + "\n")
    code, stderr = run_cli(monkeypatch, capsys, "config", "validate", str(config))
    refused(code, stderr, f"{config}: nested too deeply to read")


def test_yaml_integer_of_5000_digits_is_refused(monkeypatch, capsys, tmp_path: Path) -> None:
    config = tmp_path / "long.yaml"
    config.write_text("train: {epochs: " + "9" * 5000 + "}\n")
    code, stderr = run_cli(monkeypatch, capsys, "config", "validate", str(config))
    refused(code, stderr, f"{config}: unreadable value: a number with more than")


def test_config_errors_quote_at_most_200_characters_of_a_value(monkeypatch, capsys, tmp_path: Path) -> None:
    config = tmp_path / "long.yaml"
    config.write_text(f"model: {{max_length: {'x' * 100_000}}}\ndata: {{train: t.jsonl}}\n")
    code, stderr = run_cli(monkeypatch, capsys, "config", "validate", str(config))
    refused(code, stderr, "model.max_length: Input should be a valid integer", "(got 'xxx", "xxx...")


def test_config_with_hundreds_of_bad_fields_lists_twenty(monkeypatch, capsys, tmp_path: Path) -> None:
    config = tmp_path / "many.yaml"
    config.write_text("model: {" + ", ".join(f"k{i}: 1" for i in range(500)) + "}\ndata: {train: t.jsonl}\n")
    code, stderr = run_cli(monkeypatch, capsys, "config", "validate", str(config))
    refused(code, stderr, "model.k0: Extra inputs are not permitted", "... and 480 more")
    assert stderr.count("Extra inputs are not permitted") == 20


def test_config_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    os.mkfifo(config)
    result = hone_process("config", "validate", str(config))
    refused(result.returncode, result.stderr, f"{config}: not a regular file; expected a YAML config file")


# hone data check -----------------------------------------------------------------------------------


def data_check(monkeypatch, capsys, data: Path, model: Path) -> tuple[int, list[str]]:
    """Exit code and the errors of `hone data check --json` that name a line of `data`."""
    monkeypatch.setattr(
        sys, "argv", ["hone", "data", "check", "--json", str(data), f"model.reference={model}"]
    )
    with pytest.raises(SystemExit) as exited:
        main()
        raise SystemExit(0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    report = json.loads(captured.out)
    errors = [e for split in report["splits"] for e in split["errors"]]
    return int(exited.value.code or 0), [e for e in errors if e.startswith(f"{data} line ")]


def test_json_nested_100000_deep_is_one_error_on_its_line(
    monkeypatch, capsys, tmp_path, tiny_model_dir
) -> None:
    data = tmp_path / "deep.jsonl"
    data.write_text(
        json.dumps(GOOD_CHAT) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n" + json.dumps(GOOD_CHAT) + "\n"
    )
    code, errors = data_check(monkeypatch, capsys, data, tiny_model_dir)
    assert code == 2
    assert errors == [
        f"{data} line 2: nested too deeply: JSON arrays or objects inside each other beyond what can be read"
    ]


def test_json_number_of_5000_digits_is_one_error_on_its_line(
    monkeypatch, capsys, tmp_path, tiny_model_dir
) -> None:
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps(GOOD_CHAT) + "\n" + '{"weight": ' + "9" * 5000 + "}\n")
    code, errors = data_check(monkeypatch, capsys, data, tiny_model_dir)
    assert code == 2
    assert errors == [f"{data} line 2: unreadable JSON: a number with more than 4300 digits"]


ROLE_ORDER = [
    (["assistant", "user", "assistant"], "messages[0].role: the chat starts with 'assistant'"),
    (
        ["user", "assistant", "assistant"],
        "messages[2].role: two assistant messages in a row (messages[1] and messages[2])",
    ),
    (["user", "user", "assistant"], "messages[1].role: two user messages in a row"),
    (["user", "system", "assistant"], "messages[1].role: system message in the middle of the chat"),
    (["system", "system", "user", "assistant"], "messages[1].role: two system messages in a row"),
    (["user", "tool", "assistant"], "messages[1].role: a tool result after 'user'"),
]


def test_chats_out_of_role_order_are_errors_naming_line_and_message(
    monkeypatch, capsys, tmp_path, tiny_model_dir
) -> None:
    rows = [GOOD_CHAT] + [
        {"messages": [{"role": role, "content": f"turn {i}"} for i, role in enumerate(roles)]}
        for roles, _ in ROLE_ORDER
    ]
    data = write_jsonl(tmp_path / "order.jsonl", rows)
    code, errors = data_check(monkeypatch, capsys, data, tiny_model_dir)
    assert code == 2
    assert len(errors) == len(ROLE_ORDER), errors
    for line, (error, (_, expected)) in enumerate(zip(errors, ROLE_ORDER, strict=True), start=2):
        assert error.startswith(f"{data} line {line}: {expected}"), error


def test_link_to_dev_zero_as_data_is_refused_by_name(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.symlink_to("/dev/zero")
    result = hone_process("data", "check", str(data), f"model.reference={tiny_model_dir}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{data}: not a regular file (a character device)" in " ".join(result.stdout.split())


def test_fifo_as_data_is_refused_not_waited_on(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    os.mkfifo(data)
    result = hone_process("data", "prepare", str(data), "--out", str(tmp_path / "versions"))
    refused(result.returncode, result.stderr, f"{data}: not a regular file (a FIFO)")
    assert not (tmp_path / "versions").exists()


def test_text_file_named_gguf_is_refused_before_conversion(monkeypatch, capsys, tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_text("this is not a model\n")
    data = write_jsonl(tmp_path / "train.jsonl", [GOOD_CHAT])
    code, stderr = run_cli(monkeypatch, capsys, "data", "check", str(data), f"model.reference={model}")
    refused(
        code, stderr, f"{model}: not a GGUF file: it starts with b'this', not the GGUF magic bytes b'GGUF'"
    )


def test_truncated_gguf_is_refused_before_conversion(monkeypatch, capsys, tmp_path: Path) -> None:
    from hone.models.resolve import ALIASES

    with ALIASES["smollm2-135m-instruct"].locate().open("rb") as whole:
        model = tmp_path / "cut.gguf"
        model.write_bytes(whole.read(2_000_000))
    data = write_jsonl(tmp_path / "train.jsonl", [GOOD_CHAT])
    code, stderr = run_cli(monkeypatch, capsys, "data", "check", str(data), f"model.reference={model}")
    refused(code, stderr, f"{model}: not a readable GGUF file, truncated or corrupt")


# hone data prepare ---------------------------------------------------------------------------------


def test_prepare_out_that_is_an_existing_file_is_refused_untouched(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", [GOOD_CHAT])
    out = tmp_path / "notes.txt"
    out.write_text("mine\n")
    code, stderr = run_cli(monkeypatch, capsys, "data", "prepare", str(data), "--out", str(out))
    refused(code, stderr, f"{out}: --out is an existing file; it must be a folder for dataset versions")
    assert out.read_text() == "mine\n"
    code, stderr = run_cli(monkeypatch, capsys, "data", "prepare", str(data), "--out", str(out / "versions"))
    refused(code, stderr, f"{out / 'versions'}: --out is under {out}, which is an existing file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "train.jsonl"]


def test_prepare_weight_of_100000000_is_refused_naming_source(monkeypatch, capsys, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", [GOOD_CHAT])
    out = tmp_path / "versions"
    code, stderr = run_cli(monkeypatch, capsys, "data", "prepare", f"{data}@100000000", "--out", str(out))
    refused(code, stderr, f"{data}: weight: 100000000 is over the limit of 1000")
    assert not out.exists()


def test_prepare_mix_over_ten_million_records_is_refused(monkeypatch, capsys, tmp_path: Path) -> None:
    rows = [{"text": f"document {index}"} for index in range(10_001)]
    data = write_jsonl(tmp_path / "docs.jsonl", rows)
    out = tmp_path / "versions"
    code, stderr = run_cli(monkeypatch, capsys, "data", "prepare", f"{data}@1000", "--out", str(out))
    refused(code, stderr, f"{data}: weight: 1000 x 10,001 records brings the mix to 10,001,000 records")
    assert not out.exists()


def test_prepare_stratifies_a_reply_nested_too_deeply_for_json(monkeypatch, capsys, tmp_path: Path) -> None:
    replies = ['{"category": "billing"}', '{"category": "bug"}', "[" * 100_000]
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": reply}]}
            for i, reply in enumerate(replies)]  # fmt: skip
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "versions"
    args = ("data", "prepare", str(data), "--out", str(out), "--stratify-by", "category")
    code, stderr = run_cli(monkeypatch, capsys, *args)
    assert code == 0, stderr
    (version,) = out.iterdir()
    labels = json.loads((version / "card.json").read_text())["labels"]
    assert sorted(label for split in labels.values() for label in split) == ["[" * 100_000, "billing", "bug"]


# hone export / track / evaluate --candidate on a broken run folder --------------------------------

BROKEN_MANIFESTS = {
    "truncated": ('{"format": 1, "kind": "trai', "not valid JSON"),
    "a list": ("[1, 2]", "expected a JSON object, found list"),
    "nested": ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply to read"),
    "not utf-8": ('{"name": "caf\xe9"}', "unreadable"),
}


def broken_run(root: Path, manifest: str) -> Path:
    run = root / "runs" / "broken"
    run.mkdir(parents=True)
    (run / "manifest.json").write_bytes(manifest.encode("latin-1"))
    return run


def evaluation_config(root: Path, model: Path) -> Path:
    example = REPO / "examples" / "support-tickets"
    config = root / "evaluate.yaml"
    config.write_text(
        f"model: {{reference: {model}}}\n"
        f"data: {{train: {example / 'train.jsonl'}, test: {example / 'test.jsonl'}}}\n"
        f"run: {{dir: {root / 'evaluations'}}}\n"
    )
    return config


@pytest.mark.parametrize("broken", sorted(BROKEN_MANIFESTS))
def test_broken_manifest_is_an_error_in_every_command_that_reads_it(
    broken: str, monkeypatch, capsys, tmp_path: Path, tiny_model_dir: Path
) -> None:
    text, problem = BROKEN_MANIFESTS[broken]
    run = broken_run(tmp_path, text)
    manifest = run / "manifest.json"
    commands = [
        ("export", str(run), "--merge"),
        ("track", str(run), "--uri", f"sqlite:///{tmp_path / 'mlflow.db'}"),
        ("evaluate", "-c", str(evaluation_config(tmp_path, tiny_model_dir)), "--candidate", str(run)),
    ]
    for command in commands:
        code, stderr = run_cli(monkeypatch, capsys, *command)
        refused(code, stderr, f"{manifest}:", problem)
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json"], "nothing written into the run"
    assert not (tmp_path / "evaluations").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_truncated_adapter_is_refused_by_export_merge(monkeypatch, capsys, tmp_path, tiny_model_dir) -> None:
    run = lora_run(tmp_path, tiny_model_dir)
    weights = run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    manifest = (run / "manifest.json").read_text()
    code, stderr = run_cli(monkeypatch, capsys, "export", str(run), "--merge")
    refused(code, stderr, f"{weights}: truncated or corrupt")
    assert not (run / "export").exists(), "no merged folder, not even a staging one"
    assert (run / "manifest.json").read_text() == manifest
