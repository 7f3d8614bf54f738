from __future__ import annotations

import json
from pathlib import Path

import pytest

from hone.data.load import load_split
from hone.data.prepare import PrepareOptions, allocate, parse_source, prepare_dataset
from hone.data.sources import SourceSpec
from hone.data.version import dataset_hash

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "support-tickets"


def test_allocate_largest_remainder() -> None:
    assert allocate(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert allocate(7, (0.8, 0.1, 0.1)) == [5, 1, 1]  # remainders .6, .7, .7
    assert allocate(3, (1, 1, 1)) == [1, 1, 1]
    assert sum(allocate(101, (0.7, 0.2, 0.1))) == 101


def test_parse_source_weight() -> None:
    assert parse_source("a.jsonl@2") == SourceSpec(Path("a.jsonl"), 2.0)
    assert parse_source("a.jsonl") == SourceSpec(Path("a.jsonl"), 1.0)
    assert parse_source("odd@name.jsonl") == SourceSpec(Path("odd@name.jsonl"), 1.0)


def test_same_input_same_version_and_stratified_split(tmp_path: Path) -> None:
    options = PrepareOptions(seed=3, stratify_by="category")
    source = [SourceSpec(EXAMPLE / "train.jsonl")]
    first = prepare_dataset(source, tmp_path / "a", options)
    second = prepare_dataset(source, tmp_path / "b", options)
    assert first.name == second.name
    for split in ("train", "validation", "test"):
        assert (first / f"{split}.jsonl").read_bytes() == (second / f"{split}.jsonl").read_bytes()
    card = json.loads((first / "card.json").read_text())
    assert [card["splits"][s]["examples"] for s in ("train", "validation", "test")] == [480, 60, 60]
    assert card["labels"]["test"] == {
        c: 12 for c in ("account", "billing", "bug", "feature_request", "how_to")
    }
    assert card["sources"][0]["sha256"] and card["version"].startswith(first.name)
    reloaded = {s: load_split(first / f"{s}.jsonl") for s in ("train", "validation", "test")}
    assert dataset_hash(reloaded) == card["version"], "training on the folder records the same version"
    other_seed = prepare_dataset(source, tmp_path / "a", PrepareOptions(seed=4, stratify_by="category"))
    assert other_seed.name != first.name


def test_redaction_dedup_and_nothing_left_behind(tmp_path: Path) -> None:
    rows = [{"instruction": f"task {i}", "output": f"answer {i}"} for i in range(8)] + [
        {"instruction": "task 0", "output": "answer 0"},
        {"instruction": "mail bob@corp.example", "output": "ok"},
    ]
    source = tmp_path / "alpaca.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder = prepare_dataset([SourceSpec(source)], tmp_path / "out", PrepareOptions(redact_pii=True))
    card = json.loads((folder / "card.json").read_text())
    assert card["duplicates_dropped"] == 1 and card["pii_redacted"] == 1
    everything = "".join((folder / f"{s}.jsonl").read_text() for s in ("train", "validation", "test"))
    assert "bob@corp.example" not in everything and "[EMAIL]" in everything
    assert sum(card["splits"][s]["examples"] for s in card["splits"]) == 9
    assert [p.name for p in (tmp_path / "out").iterdir()] == [folder.name]


def test_bad_source_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(Exception, match="line 1"):
        prepare_dataset([SourceSpec(bad)], tmp_path / "out", PrepareOptions())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_card_carries_the_content_checks(tmp_path: Path) -> None:
    folder = prepare_dataset([SourceSpec(EXAMPLE / "test.jsonl")], tmp_path, PrepareOptions())
    checks = json.loads((folder / "card.json").read_text())["checks"]
    assert checks["train"] == {
        "exact_duplicate_groups": 0,
        "near_duplicate_pairs": checks["train"]["near_duplicate_pairs"],
        "pii": {},
    }
    assert checks["train_test_overlap"]["exact"] == 0
    assert set(checks) == {"train", "validation", "test", "train_validation_overlap", "train_test_overlap"}
