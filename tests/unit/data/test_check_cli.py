"""`hone data check` on each file of the bad-data corpus: exit code 2, file and line named, no traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hone.cli import main

CORPUS = Path(__file__).resolve().parents[2] / "assets" / "bad_data"
EXPECTED_LINE = {
    "malformed.jsonl": 3,
    "truncated_last_line.jsonl": 2,
    "not_utf8.jsonl": 2,
    "not_object.jsonl": 2,
    "mixed_formats.jsonl": 2,
    "unknown_role.jsonl": 2,
    "empty_assistant.jsonl": 1,
    "no_assistant.jsonl": 1,
    "last_turn_user.jsonl": 1,
    "assistant_first.jsonl": 2,
    "consecutive_roles.jsonl": 2,
    "system_mid_chat.jsonl": 2,
    "preference_bad_types.jsonl": 2,
    "bad.csv": 2,
}


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["hone", *args])
    with pytest.raises(SystemExit) as exited:
        main()
        raise SystemExit(0)
    return int(exited.value.code or 0)


@pytest.mark.parametrize("name", sorted(EXPECTED_LINE))
def test_each_bad_file_exits_2_naming_file_and_line(name, monkeypatch, capsys, tiny_model_dir) -> None:
    path = CORPUS / name
    code = run_cli(monkeypatch, "data", "check", "--json", str(path), f"model.reference={tiny_model_dir}")
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in captured.out + captured.err
    report = json.loads(captured.out)
    errors = [e for split in report["splits"] for e in split["errors"]]
    assert any(e.startswith(f"{path} line {EXPECTED_LINE[name]}:") for e in errors), errors


def test_good_file_exits_0(monkeypatch, capsys, tiny_model_dir) -> None:
    good = CORPUS.parents[2] / "examples" / "support-tickets" / "validation.jsonl"
    code = run_cli(monkeypatch, "data", "check", str(good), f"model.reference={tiny_model_dir}")
    shown = capsys.readouterr().out
    assert code == 0, shown
    assert "ok (0 errors" in shown
