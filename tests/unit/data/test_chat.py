from __future__ import annotations

import json
from pathlib import Path

import pytest

from hone.data.chat import load_chat_split, read_chat_jsonl
from hone.data.version import dataset_hash
from hone.errors import HoneError

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    data = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    path.write_bytes(data)
    return path


def test_reads_good_examples_and_injects_system_prompt(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD), "", json.dumps(GOOD)])
    examples = load_chat_split(path, system_prompt="Be brief.")
    assert [e.line for e in examples] == [1, 3]
    assert examples[0].messages[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"messages": [', "line 1: malformed JSON"),
        ("[1, 2]", "line 1: expected a JSON object, got list"),
        ('{"messages": []}', "line 1: messages: expected a non-empty list"),
        (
            '{"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
            "line 1: messages[0].role: role 'bot'; expected one of system, user, assistant",
        ),
        (
            '{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}',
            "line 1: messages[0].content: expected a string, got int",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}]}',
            "line 1: messages: last message must be the assistant",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}',
            "line 1: messages[1].content: assistant message is empty",
        ),
    ],
)
def test_each_problem_names_file_line_and_field(tmp_path: Path, line: str, expected: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [line])
    report = read_chat_jsonl(path)
    assert any(f"{path} {expected}" in error for error in report.errors), report.errors
    with pytest.raises(HoneError, match="problem"):
        load_chat_split(path)


def test_non_utf8_and_bom(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), b'{"x": "\xff"}'])
    report = read_chat_jsonl(path)
    assert len(report.examples) == 1
    assert report.errors == [f"{path} line 2: not UTF-8 (byte 7)"]


def test_all_problems_are_collected(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ["{", json.dumps(GOOD), "nope"])
    report = read_chat_jsonl(path)
    assert [e.split(":")[0] for e in report.errors] == [f"{path} line 1", f"{path} line 3"]


def test_missing_and_empty_files(tmp_path: Path) -> None:
    assert read_chat_jsonl(tmp_path / "none.jsonl").errors == [f"{tmp_path / 'none.jsonl'}: file not found"]
    empty = write_lines(tmp_path / "e.jsonl", [])
    assert "no examples" in read_chat_jsonl(empty).errors[0]


def test_dataset_hash_depends_on_content_only(tmp_path: Path) -> None:
    a = load_chat_split(write_lines(tmp_path / "a.jsonl", [json.dumps(GOOD)]))
    b = load_chat_split(write_lines(tmp_path / "b.jsonl", ["", json.dumps(GOOD)]))
    changed = {"messages": [GOOD["messages"][0], {"role": "assistant", "content": "hello!"}]}
    c = load_chat_split(write_lines(tmp_path / "c.jsonl", [json.dumps(changed)]))
    assert dataset_hash({"train": a}) == dataset_hash({"train": b})
    assert dataset_hash({"train": a}) != dataset_hash({"train": c})
    assert dataset_hash({"train": a}) != dataset_hash({"test": a})
    assert len(dataset_hash({"train": a})) == 64
