"""Raw records from the files people already have: JSONL, JSON, CSV, Parquet, `datasets` folders, and
plain-text or Markdown documents (a file, or a folder of them) for continued pre-training.

A source only yields dictionaries and where each came from; deciding what a record means (chat,
preference, plain text) is `hone.data.formats`' job. Every problem is a `HoneError` worded
"FILE line N: problem", so a person can open the file at that line and fix it. For Parquet files and
`datasets` folders, which have no lines, "line N" is the row number, starting at 1.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hone.errors import HoneError, listed, located, quoted, value_problem

SUPPORTED = (
    ".jsonl",
    ".json",
    ".csv",
    ".parquet",
    ".txt and .md (one document each)",
    "a folder of .txt/.md documents",
    "a folder saved by datasets' Dataset.save_to_disk",
)
DOCUMENT_SUFFIXES = (".txt", ".md")
BOM = b"\xef\xbb\xbf"
# Long documents in one CSV cell are normal for continued pre-training; the csv default (128 KiB) is not.
CSV_FIELD_LIMIT = 2**31 - 1
MAX_SHOWN = 20
# `path@weight` repeats a source `weight` times; beyond these the mix is a typo, not a dataset.
MAX_WEIGHT = 1000
MAX_MIXED_RECORDS = 10_000_000


@dataclass
class RawRecord:
    """One record as read from its source, before any format is applied."""

    data: dict[str, Any]
    source: str
    line: int


@dataclass
class SourceSpec:
    """A source in a mix; `weight` is its relative sampling rate (see `mix_sources`)."""

    path: Path
    weight: float = 1.0


def read_records(path: str | Path) -> Iterator[RawRecord]:
    """Yield the records of one source, raising a `HoneError` at the first problem.

    For training, where any bad record should stop the run before it starts. Use `read_all` to see
    every problem at once.
    """
    for item in _iter_source(Path(path)):
        if isinstance(item, str):
            raise HoneError(item)
        yield item


def read_all(path: str | Path) -> tuple[list[RawRecord], list[str]]:
    """Read every readable record and collect every problem, so `hone data check` can list them all."""
    records: list[RawRecord] = []
    errors: list[str] = []
    try:
        for item in _iter_source(Path(path)):
            if isinstance(item, str):
                errors.append(item)
            else:
                records.append(item)
    except HoneError as exc:
        errors.append(str(exc))
    return records, errors


def mix_sources(specs: Iterable[SourceSpec], seed: int) -> list[RawRecord]:
    """Combine sources, each sampled at its relative rate, deterministically for a given seed.

    The rule: a source of n records with weight w contributes floor(w) full copies of its records, plus
    a sample without replacement of round(frac(w) * n) records (halves round up). So 2.0 repeats a
    source twice, 0.5 takes half of it and 1.5 takes it once plus half again. The sample is drawn from
    a generator seeded with `seed` and the source's path, so a source's sample does not change when
    other sources are added or reordered. Records keep their file order within each copy and sources
    keep the given order; shuffling is left to training. Any unreadable record raises one `HoneError`
    listing every problem in every source, and so does a weight over MAX_WEIGHT or a mix that would grow
    past MAX_MIXED_RECORDS (`data@100000000` is a typo that would otherwise fill the memory).
    """
    specs = list(specs)
    if not specs:
        raise HoneError("no data sources to mix")
    mixed: list[RawRecord] = []
    errors: list[str] = []
    for spec in specs:
        if not (isinstance(spec.weight, (int, float)) and math.isfinite(spec.weight) and spec.weight > 0):
            errors.append(
                located(spec.path, f"must be a positive number, got {quoted(spec.weight)}", None, "weight")
            )
            continue
        if spec.weight > MAX_WEIGHT:
            errors.append(
                located(spec.path, f"{spec.weight:.15g} is over the limit of {MAX_WEIGHT}", None, "weight")
            )
            continue
        records, problems = read_all(spec.path)
        errors.extend(problems)
        grown = len(mixed) + math.ceil(spec.weight * len(records))
        if grown > MAX_MIXED_RECORDS:
            errors.append(
                located(
                    spec.path,
                    f"{spec.weight:.15g} x {len(records):,} records brings the mix to {grown:,} records, "
                    f"over the limit of {MAX_MIXED_RECORDS:,}",
                    None,
                    "weight",
                )
            )
            continue
        whole = math.floor(spec.weight)
        mixed.extend(records * whole)
        extra = math.floor((spec.weight - whole) * len(records) + 0.5)
        if extra:
            rng = random.Random(f"{seed}:{spec.path}")
            mixed.extend(records[index] for index in sorted(rng.sample(range(len(records)), extra)))
    if errors:
        shown = errors[:MAX_SHOWN]
        more = f"\n  ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise HoneError(f"{len(errors)} problem(s) in the data sources:\n  " + "\n  ".join(shown) + more)
    return mixed


def _iter_source(path: Path) -> Iterator[RawRecord | str]:
    """Yield records and per-record problems; raise `HoneError` when the whole source is unreadable."""
    if not path.exists():
        raise HoneError(located(path, "file not found"))
    if not path.is_dir() and not path.is_file():  # is_file follows links: a link to /dev/zero is refused
        raise HoneError(
            located(path, f"not a regular file ({file_kind(path)}); data must be a file or folder")
        )
    if path.is_dir():
        readers = _documents(path) if _document_files(path) else _datasets_folder(path)
    else:
        suffix = path.suffix.lower()
        reader = {
            ".jsonl": _jsonl,
            ".json": _json,
            ".csv": _csv,
            ".parquet": _parquet,
            ".txt": _documents,
            ".md": _documents,
        }.get(suffix)
        if reader is None:
            raise HoneError(
                located(path, f"unsupported file type {suffix or '(no extension)'!r}; supported: ")
                + ", ".join(SUPPORTED)
            )
        readers = reader(path)
    count = 0
    for item in readers:
        count += isinstance(item, RawRecord)
        yield item
    if count == 0:
        yield located(path, "no records (the source is empty)")


def _utf8_problem(raw: bytes, exc: UnicodeDecodeError, offset: int) -> str:
    """Name the first bad byte and where it is, since editors rarely show the line of a decoding error."""
    return f"not UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {offset} of the file"


def _jsonl(path: Path) -> Iterator[RawRecord | str]:
    """One JSON object per line, read in binary so a 10 MB line costs one C-level readline."""
    source = str(path)
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if number == 1 and raw.startswith(BOM):
                raw, start = raw[len(BOM) :], start + len(BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield located(path, _utf8_problem(raw, exc, start + exc.start), number)
                continue
            if not text.strip():
                continue
            try:
                parsed = json.loads(text)
            except (RecursionError, ValueError) as exc:
                yield located(path, _json_problem(exc, raw.endswith(b"\n")), number)
                continue
            if not isinstance(parsed, dict):
                yield located(path, f"expected a JSON object, got {json_type(parsed)}", number)
                continue
            if lone_surrogate(text, parsed) is not None:
                yield located(path, SURROGATE_PROBLEM, number)
                continue
            yield RawRecord(data=parsed, source=source, line=number)


# JSON may escape half of a UTF-16 pair (`\ud800`); Python decodes it into a string no encoder, tokenizer or
# hash can take. A high half not followed by a low one, or a low half not preceded by a high one.
LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
SURROGATE_PROBLEM = "an unpaired UTF-16 surrogate escape (such as \\ud800) is not text; remove it"


def lone_surrogate(text: str, parsed: Any) -> int | None:
    """Offset in `text` of the first unpaired surrogate escape that reached the parsed value, else None."""
    found = LONE_SURROGATE.search(text)
    if found is None:
        return None
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return found.start()
    return None  # the match was an escaped backslash followed by "ud800", which is plain text


def _json_problem(exc: RecursionError | ValueError, complete: bool) -> str:
    """Why a line is not one JSON value: malformed, cut off, nested too deeply or a number too long."""
    if isinstance(exc, RecursionError):
        return "nested too deeply: JSON arrays or objects inside each other beyond what can be read"
    if not isinstance(exc, json.JSONDecodeError):
        return f"unreadable JSON: {value_problem(exc)}"
    if not complete:
        return (
            "truncated last line: no newline at the end and the JSON is incomplete "
            f"({exc.msg} at column {exc.colno}); was the file cut off while being written?"
        )
    return f"malformed JSON: {exc.msg} (column {exc.colno})"


def file_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, for refusing it by name."""
    mode = path.stat().st_mode
    for test, kind in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "neither a file nor a folder"


def _decode(path: Path, raw: bytes) -> str:
    """Decode a whole file, accepting a BOM; a bad byte is reported with its line and offset."""
    skip = len(BOM) if raw.startswith(BOM) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = raw.count(b"\n", 0, offset) + 1
        raise HoneError(located(path, _utf8_problem(raw[skip:], exc, offset), line)) from None


def _json(path: Path) -> Iterator[RawRecord | str]:
    """A list of objects, or {"data": [...]}; "line N" is the line where each object starts."""
    text = _decode(path, path.read_bytes())
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HoneError(
            located(path, f"malformed JSON: {exc.msg} (column {exc.colno})", exc.lineno)
        ) from None
    except (RecursionError, ValueError) as exc:
        raise HoneError(located(path, _json_problem(exc, complete=True))) from None
    offset = lone_surrogate(text, parsed)
    if offset is not None:
        raise HoneError(located(path, SURROGATE_PROBLEM, text.count("\n", 0, offset) + 1))
    if isinstance(parsed, list):
        start = len(text) - len(text.lstrip())
    elif isinstance(parsed, dict) and isinstance(parsed.get("data"), list):
        start = _data_offset(text)
        parsed = parsed["data"]
    else:
        got = f"an object with keys {listed(parsed)}" if isinstance(parsed, dict) else None
        raise HoneError(
            located(path, 'expected a list of objects, or an object with a list under "data"; got ')
            + (got or json_type(parsed))
        )
    line, previous = 1, 0
    for value, offset in zip(parsed, _array_offsets(text, start), strict=True):
        line, previous = line + text.count("\n", previous, offset), offset
        if isinstance(value, dict):
            yield RawRecord(data=value, source=str(path), line=line)
        else:
            yield located(path, f"expected a JSON object, got {json_type(value)}", line)


_DECODER = json.JSONDecoder()


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _data_offset(text: str) -> int:
    """Offset of the (last, as json.loads keeps) "data" value in a top-level object already known valid."""
    pos, found = _skip_space(text, 0) + 1, -1
    while True:
        pos = _skip_space(text, pos)
        if text[pos] == "}":
            return found
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_space(text, _skip_space(text, pos) + 1)
        if key == "data":
            found = pos
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_space(text, pos)
        pos += text[pos] == ","


def _array_offsets(text: str, pos: int) -> Iterator[int]:
    """Start offset of each element of the (already validated) JSON array at `pos`."""
    pos = _skip_space(text, pos + 1)
    while text[pos] != "]":
        yield pos
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_space(text, pos)
        if text[pos] == ",":
            pos = _skip_space(text, pos + 1)


def _csv(path: Path) -> Iterator[RawRecord | str]:
    """Header row then one record per row; "line N" is the physical line where the row starts."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.reader(io.StringIO(_decode(path, path.read_bytes()), newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise HoneError(located(path, "no header row (the file is empty)", 1))
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise HoneError(located(path, f"duplicate column names: {', '.join(duplicates)}", 1))
        ended = reader.line_num
        for row in reader:
            start, ended = ended + 1, reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                yield located(
                    path, f"expected {len(header)} fields (as in the header), got {len(row)}", start
                )
                continue
            yield RawRecord(data=dict(zip(header, row, strict=True)), source=str(path), line=start)
    except csv.Error as exc:
        raise HoneError(located(path, f"unreadable CSV: {exc}", reader.line_num)) from None


def _parquet(path: Path) -> Iterator[RawRecord | str]:
    """Rows in batches, so a large file is never held whole; "line N" is the row number."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for data in batch.to_pylist():
                row += 1
                yield RawRecord(data=data, source=str(path), line=row)
    except (OSError, pa.ArrowException) as exc:
        raise HoneError(located(path, f"not a readable Parquet file: {exc}")) from None


def _document_files(path: Path) -> list[Path]:
    """Plain-text documents in a folder (not a saved dataset), in a stable order."""
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES)


def _documents(path: Path) -> Iterator[RawRecord | str]:
    """Text or Markdown files, each one document ({"text": ...}) for continued pre-training."""
    for file in _document_files(path) if path.is_dir() else [path]:
        text = _decode(file, file.read_bytes())
        if text.strip():
            yield RawRecord(data={"text": text}, source=str(file), line=1)
        else:
            yield located(file, "empty document", 1)


def _datasets_folder(path: Path) -> Iterator[RawRecord | str]:
    """A `Dataset.save_to_disk` folder; a `DatasetDict` is refused so the split is always a choice."""
    if not (path / "state.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise HoneError(
            located(path, "a folder, but not one saved by datasets' save_to_disk (no state.json inside)")
        )
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise HoneError(located(path, f"could not load the saved dataset: {exc}")) from None
    if isinstance(dataset, DatasetDict):
        splits = list(dataset)
        example = f", e.g. {path / splits[0]}" if splits else ""
        raise HoneError(
            located(path, f"a DatasetDict with splits {', '.join(splits)}; point at one split's folder")
            + example
        )
    for row, data in enumerate(dataset, start=1):
        yield RawRecord(data=dict(data), source=str(path), line=row)


def json_type(value: Any) -> str:
    """JSON's name for a value's type, since the person reading the error wrote JSON, not Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
