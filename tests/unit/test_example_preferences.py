"""The shipped preference pairs of the example task: exactly what the generator writes, valid hone
preference data, the chosen reply always the correct answer and the rejected one always a mistake."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

from hone.data.load import load_split, require_kind

TASK = Path(__file__).resolve().parents[2] / "examples" / "support-tickets"
PREFERENCES = TASK / "preferences"
SPLITS = {"train": 300, "validation": 50}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    script = PREFERENCES / "make_preferences.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, timeout=120)
    for split in SPLITS:
        assert digest(tmp_path / f"{split}.jsonl") == digest(PREFERENCES / f"{split}.jsonl"), split


def test_pairs_are_preference_examples_with_the_right_answer_chosen() -> None:
    validator = Draft202012Validator(json.loads((TASK / "schema.json").read_text()))
    mistakes = {"wrong field": 0, "invalid json": 0, "prose": 0}
    for split, size in SPLITS.items():
        examples = load_split(PREFERENCES / f"{split}.jsonl")
        require_kind(examples, "preference", "dpo")
        assert len(examples) == size
        answers = {
            row["messages"][1]["content"]: row["messages"][2]["content"]
            for row in map(json.loads, (TASK / f"{split}.jsonl").read_text().splitlines())
        }
        for example in examples:
            assert [m["role"] for m in example.messages] == ["system", "user"]
            chosen, rejected = example.chosen[0]["content"], example.rejected[0]["content"]
            assert chosen == answers[example.messages[1]["content"]], "chosen is the task's own answer"
            assert rejected != chosen
            try:
                parsed = json.loads(rejected)
            except json.JSONDecodeError:
                kind = "prose" if not rejected.startswith("{") else "invalid json"
            else:
                assert validator.is_valid(parsed), "a wrong field still fits the schema"
                kind = "wrong field"
            mistakes[kind] += 1
    assert all(count >= 30 for count in mistakes.values()), mistakes
