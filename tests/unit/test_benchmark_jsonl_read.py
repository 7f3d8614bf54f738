"""benchmarks/jsonl_read.py on small files: every reader is timed on both files and returns the same
records, and the ratio comes from the measured times."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def test_every_reader_is_timed_on_both_files(
    benchmark_script: Callable[[str], ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    bench = benchmark_script("jsonl_read")

    report = bench.main(["--megabytes", "0.5", "--lines", "300", "--rounds", "2"])

    assert list(report) == ["one long line", "many lines"]
    long_line, many = report["one long line"], report["many lines"]
    assert long_line["records"] == 1 and long_line["bytes"] > 0.5 * 1024 * 1024
    assert many["records"] == 300
    for result in report.values():
        assert result["same_records"]
        assert set(result["rounds"]) == set(bench.READERS)
        assert all(len(times) == 2 and min(times) > 0 for times in result["rounds"].values())
        ratio = result["seconds"]["hone"] / result["seconds"]["stdlib-text"]
        assert result["hone/stdlib-text"] == pytest.approx(ratio)
    printed = capsys.readouterr().out
    assert f"| many lines | {many['bytes'] / 1024 / 1024:.1f} | 300 |" in printed
    assert "disagree" not in printed


def test_the_readers_agree_and_skip_blank_lines(
    tmp_path: Path, benchmark_script: Callable[[str], ModuleType]
) -> None:
    bench = benchmark_script("jsonl_read")
    files = bench.write_files(tmp_path, 0.01, 4)
    rows = [json.loads(line) for line in files["many lines"].read_text().splitlines()]
    assert rows[2]["messages"][1]["content"].startswith("Ticket 2:")
    path = tmp_path / "blank.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')

    for name, reader in bench.READERS.items():
        assert reader(path) == [{"a": 1}, {"a": 2}], name
        assert reader(files["many lines"]) == rows, name
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(RuntimeError, match="line 2: malformed JSON"):
        bench.hone_reader(path)
