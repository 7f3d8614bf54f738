"""python benchmarks/jsonl_read.py [--megabytes 10] [--lines 100000] [--rounds 3]

Reading JSONL with hone.data.sources.read_all (which keeps line numbers and byte offsets for its error
messages), side by side with three baselines that keep neither, on two synthetic files:
  one long line  a single chat record whose answer is --megabytes of text (a document for continued
                 pre-training, or a chat with a pasted log)
  many lines     --lines short chat records of ~200 bytes each
The baselines:
  stdlib-text    `for line in open(path, encoding="utf-8")`, json.loads each non-blank line: the plain way
  stdlib-binary  the same over `open(path, "rb")`: hone's way of reading, without its bookkeeping
  read-whole     path.read_bytes().splitlines(), json.loads each: the floor, the whole file in memory
Every reader must return the same records; the script checks that, then prints the best time of each over
the rounds (interleaved, the order reversed every other round) and hone's ratio to stdlib-text.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hone.data.sources import read_all

SYSTEM = "You triage support tickets. Reply with only a JSON object."


def hone_reader(path: Path) -> list[dict[str, Any]]:
    records, errors = read_all(path)
    if errors:
        raise RuntimeError(errors[0])
    return [record.data for record in records]


def stdlib_text(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def stdlib_binary(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_whole(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


READERS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    "hone": hone_reader,
    "stdlib-text": stdlib_text,
    "stdlib-binary": stdlib_binary,
    "read-whole": read_whole,
}


def chat(question: str, answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def write_files(folder: Path, megabytes: float, lines: int) -> dict[str, Path]:
    long_line = folder / "long-line.jsonl"
    text = "lorem ipsum " * int(megabytes * 1024 * 1024 / 12)
    long_line.write_text(json.dumps(chat("Summarise this log.", text)) + "\n", encoding="utf-8")
    many = folder / "many-lines.jsonl"
    with many.open("w", encoding="utf-8") as handle:
        for index in range(lines):
            row = chat(f"Ticket {index}: my invoice was charged twice.", '{"category": "billing"}')
            handle.write(json.dumps(row) + "\n")
    return {"one long line": long_line, "many lines": many}


def run(megabytes: float, lines: int, rounds: int, folder: Path) -> dict[str, Any]:
    files = write_files(folder, megabytes, lines)
    report: dict[str, Any] = {}
    for case, path in files.items():
        seconds: dict[str, list[float]] = {name: [] for name in READERS}
        records: dict[str, list[dict[str, Any]]] = {}
        names = list(READERS)
        for round_index in range(rounds):
            for name in names if round_index % 2 == 0 else names[::-1]:
                began = time.perf_counter()
                records[name] = READERS[name](path)
                seconds[name].append(time.perf_counter() - began)
        reference = records["stdlib-text"]
        best = {name: min(times) for name, times in seconds.items()}
        report[case] = {
            "bytes": path.stat().st_size,
            "records": len(reference),
            "same_records": all(found == reference for found in records.values()),
            "rounds": seconds,
            "seconds": best,
            "hone/stdlib-text": best["hone"] / best["stdlib-text"],
        }
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=10.0)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        report = run(args.megabytes, args.lines, args.rounds, Path(folder))
    print(f"best of {args.rounds} rounds, seconds")
    print("| file | MB | records | " + " | ".join(READERS) + " | hone / stdlib-text |")
    print("|---|---:|---:|" + "---:|" * len(READERS) + "---:|")
    for case, result in report.items():
        times = " | ".join(f"{result['seconds'][name]:.3f}" for name in READERS)
        size = result["bytes"] / 1024 / 1024
        ratio = result["hone/stdlib-text"]
        print(f"| {case} | {size:.1f} | {result['records']:,} | {times} | {ratio:.2f}x |")
        if not result["same_records"]:
            print(f"  {case}: the readers disagree on the records")
    return report


if __name__ == "__main__":
    main()
