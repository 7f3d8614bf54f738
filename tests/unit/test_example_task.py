"""The shipped example task: the committed files are exactly what the generator writes, and valid."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support-tickets"
SPLITS = {"train": 600, "validation": 100, "test": 150}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(EXAMPLE / "generate.py"), "--out", str(tmp_path)], check=True, timeout=120
    )
    for split in SPLITS:
        assert digest(tmp_path / f"{split}.jsonl") == digest(EXAMPLE / f"{split}.jsonl"), split


def test_splits_have_the_stated_sizes_no_overlap_and_valid_answers() -> None:
    validator = Draft202012Validator(json.loads((EXAMPLE / "schema.json").read_text()))
    seen: set[str] = set()
    for split, size in SPLITS.items():
        rows = [json.loads(line) for line in (EXAMPLE / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == size
        for row in rows:
            user = next(m["content"] for m in row["messages"] if m["role"] == "user")
            assert user not in seen
            seen.add(user)
            answer = json.loads(row["messages"][-1]["content"])
            assert validator.is_valid(answer), answer
    assert len(list((EXAMPLE / "knowledge").glob("*.md"))) >= 6
