from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import pytest

from hone.data import sources
from hone.data.sources import RawRecord, SourceSpec, mix_sources, read_all, read_records
from hone.errors import HoneError

BAD = Path(__file__).resolve().parents[2] / "assets" / "bad_data"
ROWS = [{"text": "first"}, {"text": "second"}, {"text": "third"}]


def locations(records: list[RawRecord]) -> list[tuple[str, int]]:
    return [(record.data["text"], record.line) for record in records]


def test_jsonl_skips_blank_lines_and_keeps_physical_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(f"{json.dumps(ROWS[0])}\n\n  \n{json.dumps(ROWS[1])}\r\n{json.dumps(ROWS[2])}")
    records = list(read_records(path))
    assert locations(records) == [("first", 1), ("second", 4), ("third", 5)]
    assert {record.source for record in records} == {str(path)}


def test_json_list_locates_each_object_at_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS, indent=2))
    # indent=2 puts "[" on line 1 and each object over three lines from line 2.
    assert locations(list(read_records(path))) == [("first", 2), ("second", 5), ("third", 8)]


def test_json_object_with_data_list(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    text = '{"data": "decoy ] [", "meta": {"data": [1]},\n "data": [\n' + ",\n".join(map(json.dumps, ROWS))
    path.write_text(text + "\n]}\n")
    assert locations(list(read_records(path))) == [("first", 3), ("second", 4), ("third", 5)]


def test_json_problems(tmp_path: Path) -> None:
    items = tmp_path / "items.json"
    items.write_text('[\n{"text": "a"},\n3\n]')
    records, errors = read_all(items)
    assert locations(records) == [("a", 2)]
    assert errors == [f"{items} line 3: expected a JSON object, got number"]
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"rows": []}')
    with pytest.raises(
        HoneError, match=r'or an object with a list under "data"; got an object with keys rows'
    ):
        list(read_records(wrong))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"text": "a"},\n{"text" "b"}\n]')
    with pytest.raises(HoneError, match=r"broken.json line 3: malformed JSON: Expecting ':' delimiter"):
        list(read_records(broken))


def test_csv_lines_are_physical_and_header_is_line_one(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('\ufefftext,note\nfirst,a\n"second\nspans two lines",b\n\nthird,c\n', encoding="utf-8")
    records = list(read_records(path))
    assert [(record.data["text"], record.line) for record in records] == [
        ("first", 2),
        ("second\nspans two lines", 3),
        ("third", 6),
    ]
    assert records[0].data == {"text": "first", "note": "a"}


def test_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,note\nfirst,a\nsecond,b,extra\n")
    records, errors = read_all(path)
    assert len(records) == 1
    assert errors == [f"{path} line 3: expected 2 fields (as in the header), got 3"]


def test_csv_accepts_cells_beyond_the_default_field_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text\n" + "x" * 200_000 + "\n")
    assert len(next(read_records(path)).data["text"]) == 200_000


def test_parquet_rows_are_numbered_from_one(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert locations(list(read_records(path))) == [("first", 1), ("second", 2), ("third", 3)]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(HoneError, match=r"broken.parquet: not a readable Parquet file"):
        list(read_records(broken))


def test_datasets_folder_and_datasetdict(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    assert locations(list(read_records(tmp_path / "one"))) == [("first", 1), ("second", 2), ("third", 3)]
    splits = DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:1])})
    splits.save_to_disk(str(tmp_path / "both"))
    with pytest.raises(HoneError) as caught:
        list(read_records(tmp_path / "both"))
    message = str(caught.value)
    assert "a DatasetDict with splits train, test; point at one split's folder" in message
    assert str(tmp_path / "both" / "train") in message


def test_plain_folder_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(HoneError, match="not one saved by datasets' save_to_disk"):
        list(read_records(tmp_path))


def test_missing_file_and_unknown_extension(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(HoneError) as caught:
        list(read_records(missing))
    assert str(caught.value) == f"{missing}: file not found"
    assert read_all(missing) == ([], [f"{missing}: file not found"])
    sheet = tmp_path / "d.xlsx"
    sheet.write_text("x")
    with pytest.raises(
        HoneError, match=r"unsupported file type '.xlsx'; supported: .jsonl, .json, .csv, .parquet"
    ):
        list(read_records(sheet))


def test_empty_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n\n")
    assert read_all(path) == ([], [f"{path}: no records (the source is empty)"])


def test_read_records_stops_at_first_problem_and_read_all_collects_every_one() -> None:
    path = BAD / "not_object.jsonl"
    with pytest.raises(HoneError, match=r"not_object.jsonl line 2: expected a JSON object, got list"):
        list(read_records(path))
    records, errors = read_all(path)
    assert [record.line for record in records] == [1]
    assert [error.split(": ", 1)[0].rsplit(" ", 2)[1:] for error in errors] == [["line", "2"], ["line", "3"]]


@pytest.mark.parametrize(
    ("name", "lines", "problem"),
    [
        ("malformed.jsonl", [1], "line 3: malformed JSON: Expecting ',' delimiter (column 49)"),
        ("truncated_last_line.jsonl", [1], "line 2: truncated last line: no newline at the end"),
        ("not_utf8.jsonl", [1], "line 2: not UTF-8: byte 0xe9 at byte offset {offset} of the file"),
        ("not_object.jsonl", [1], "line 3: expected a JSON object, got string"),
        ("bom.jsonl", [1, 2], None),
    ],
)
def test_bad_jsonl_corpus(name: str, lines: list[int], problem: str | None) -> None:
    path = BAD / name
    records, errors = read_all(path)
    assert [record.line for record in records] == lines
    if problem is None:
        assert errors == []
        assert records[0].data["messages"][0]["role"] == "user"
        return
    if "{offset}" in problem:
        problem = problem.format(offset=path.read_bytes().index(b"\xe9"))
    assert errors[-1].startswith(f"{path} {problem}")
    assert "Traceback" not in "".join(errors)


class CountingHandle:
    """A real file handle that counts the lines taken from it."""

    def __init__(self, handle: IO[Any]) -> None:
        self.handle, self.lines_taken = handle, 0

    def __enter__(self) -> CountingHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def __iter__(self) -> CountingHandle:
        return self

    def __next__(self) -> Any:
        self.lines_taken += 1
        return next(self.handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


def test_ten_megabyte_single_line_is_read_in_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What keeps a 10 MB line fast: the file is read as bytes, a line at a time (one C-level readline for the
    whole line), and parsed once; no per-character work in Python. benchmarks/jsonl_read.py times it."""
    content = "lorem ipsum " * (10 * 1024 * 1024 // 12)
    record = {"messages": [{"role": "user", "content": "echo"}, {"role": "assistant", "content": content}]}
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert path.stat().st_size > 10 * 1024 * 1024
    opened: list[tuple[Path, str, CountingHandle]] = []
    real_open = Path.open

    def recording_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> CountingHandle:
        handle = CountingHandle(real_open(self, mode, *args, **kwargs))
        opened.append((self, mode, handle))
        return handle

    parsed: list[int] = []
    real_loads = sources.json.loads

    def recording_loads(text: str, **kwargs: Any) -> Any:
        parsed.append(len(text))
        return real_loads(text, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "open", recording_open)
        patch.setattr(sources.json, "loads", recording_loads)
        records, errors = read_all(path)

    assert errors == []
    assert records[0].data["messages"][1]["content"] == content
    assert [(where, mode) for where, mode, _ in opened] == [(path, "rb")], "opened once, as bytes"
    assert opened[0][2].lines_taken == 2, "one readline for the line, one to find the end"
    assert parsed == [path.stat().st_size], "the whole line parsed once"


def write_numbered(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"text": f"{path.stem}-{i}"}) + "\n" for i in range(count)))
    return path


def test_mix_weights_give_expected_counts_deterministically(tmp_path: Path) -> None:
    a = write_numbered(tmp_path / "a.jsonl", 10)
    b = write_numbered(tmp_path / "b.jsonl", 10)
    c = write_numbered(tmp_path / "c.jsonl", 3)
    specs = [SourceSpec(a, 2.0), SourceSpec(b, 0.5), SourceSpec(c, 1.5)]
    mixed = mix_sources(specs, seed=7)
    texts = [record.data["text"] for record in mixed]
    assert sum(t.startswith("a-") for t in texts) == 20
    assert sum(t.startswith("b-") for t in texts) == 5
    assert sum(t.startswith("c-") for t in texts) == 5  # 3 + round(0.5 * 3) with halves rounding up
    assert len({t for t in texts if t.startswith("b-")}) == 5  # sampled without replacement
    assert texts[:10] == texts[10:20] == [f"a-{i}" for i in range(10)]
    assert [r.data for r in mix_sources(specs, seed=7)] == [r.data for r in mixed]
    samples = {tuple(r.line for r in mix_sources([SourceSpec(b, 0.5)], seed=s)) for s in range(10)}
    assert len(samples) > 1  # the seed matters
    alone = mix_sources([SourceSpec(b, 0.5)], seed=7)
    assert [r.line for r in alone] == [r.line for r in mixed if r.source == str(b)]


def test_mix_reports_every_problem(tmp_path: Path) -> None:
    a = write_numbered(tmp_path / "a.jsonl", 2)
    with pytest.raises(HoneError) as caught:
        mix_sources(
            [SourceSpec(a, 0), SourceSpec(tmp_path / "gone.jsonl"), SourceSpec(BAD / "not_object.jsonl")], 0
        )
    message = str(caught.value)
    assert message.startswith("4 problem(s) in the data sources:")
    assert f"{a}: weight: must be a positive number, got 0" in message
    assert f"{tmp_path / 'gone.jsonl'}: file not found" in message
    assert "not_object.jsonl line 3: expected a JSON object, got string" in message
    with pytest.raises(HoneError, match="no data sources to mix"):
        mix_sources([], seed=0)


def test_text_and_markdown_documents_are_one_record_each(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "nested").mkdir(parents=True)
    (folder / "a.md").write_text("# Title\n\nBody.\n", encoding="utf-8")
    (folder / "nested" / "b.txt").write_text("Plain text.", encoding="utf-8")
    (folder / "ignored.png").write_bytes(b"\x89PNG")
    records, errors = read_all(folder)
    assert not errors
    assert [r.data for r in records] == [{"text": "# Title\n\nBody.\n"}, {"text": "Plain text."}]
    assert records[1].source == str(folder / "nested" / "b.txt")
    single, _ = read_all(folder / "a.md")
    assert single[0].data == {"text": "# Title\n\nBody.\n"}


def test_an_empty_document_is_reported_with_its_file(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    _, errors = read_all(tmp_path / "empty.txt")
    assert errors and "empty.txt" in errors[0] and "empty document" in errors[0]
