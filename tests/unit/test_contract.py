"""The run folder's typed files: every shipped example round-trips, and bad files fail with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hone import contract
from hone.contract import Ladder, Manifest, TrainingMetrics
from hone.errors import HoneError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
RUNS = ASSETS / "runs"

EXAMPLES = {
    Manifest: sorted(RUNS.glob("*/manifest.json")),
    TrainingMetrics: sorted(RUNS.glob("*/metrics.json")),
    Ladder: [ASSETS / "ladder.json", *sorted(RUNS.glob("*/ladder.json"))],
}
CASES = [(model, path) for model, paths in EXAMPLES.items() for path in paths]


def test_every_kind_of_file_has_shipped_examples() -> None:
    assert len(EXAMPLES[Manifest]) >= 2, "a training and an evaluation manifest"
    assert EXAMPLES[TrainingMetrics] and len(EXAMPLES[Ladder]) >= 2
    kinds = {contract.read(Manifest, path).kind for path in EXAMPLES[Manifest]}
    assert kinds == {"training", "evaluation"}


@pytest.mark.parametrize(("model", "path"), CASES, ids=[f"{p.parent.name}/{p.name}" for _, p in CASES])
def test_shipped_examples_round_trip(model: type[contract.Record], path: Path, tmp_path: Path) -> None:
    record = contract.read(model, path)
    copy = tmp_path / path.name
    contract.write(record, copy)
    assert contract.read(model, copy) == record
    assert contract.to_json(record) == without_nulls(json.loads(path.read_text())), "no field is lost"


def without_nulls(value: object) -> object:
    """The JSON value with null object members left out, as `contract.to_json` writes it."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def test_a_file_from_a_newer_hone_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    newer = json.loads(EXAMPLES[Manifest][0].read_text())
    newer["format"] = contract.MANIFEST_FORMAT + 1
    newer["something_new"] = {"a": 1}
    path.write_text(json.dumps(newer))
    with pytest.raises(
        HoneError, match=r"manifest.json: written by a newer hone \(format 2; this hone reads up to 1\)"
    ):
        contract.read(Manifest, path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": 1, "name": "x", "kind": "trai', "not valid JSON .* truncated"),
        ("[1, 2]", "expected a JSON object, found list"),
        ("", "not valid JSON"),
    ],
)
def test_truncated_or_foreign_files_are_errors_not_tracebacks(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(text)
    with pytest.raises(HoneError, match=message):
        contract.read(Manifest, path)


def test_a_bad_field_is_named_with_its_path(tmp_path: Path) -> None:
    ladder = json.loads((ASSETS / "ladder.json").read_text())
    ladder["rungs"][1]["latency"]["p50_seconds"] = "fast"
    path = tmp_path / "ladder.json"
    path.write_text(json.dumps(ladder))
    with pytest.raises(
        HoneError, match=r"ladder.json: rungs.1.latency.p50_seconds: Input should be a valid number"
    ):
        contract.read(Ladder, path)


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(HoneError, match="missing"):
        contract.read(Ladder, tmp_path / "ladder.json")
    (tmp_path / "ladder.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(HoneError, match="unreadable"):
        contract.read(Ladder, tmp_path / "ladder.json")


def test_infinite_cost_survives_the_round_trip(tmp_path: Path) -> None:
    ladder = contract.read(Ladder, ASSETS / "ladder.json")
    ladder.rungs[0].cost.per_1000_requests = float("inf")
    contract.write(ladder, tmp_path / "ladder.json")
    assert '"per_1000_requests": Infinity' in (tmp_path / "ladder.json").read_text()
    assert contract.read(Ladder, tmp_path / "ladder.json").rungs[0].cost.per_1000_requests == float("inf")
