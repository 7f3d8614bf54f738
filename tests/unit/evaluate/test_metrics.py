from __future__ import annotations

import json

import pytest

from hone.evaluate.metrics import exact_match, field_accuracy, parse_json_object, score_json_outputs

SCHEMA = {
    "type": "object",
    "required": ["category", "priority"],
    "additionalProperties": False,
    "properties": {"category": {"enum": ["billing", "bug"]}, "priority": {"enum": ["low", "high"]}},
}
REF = json.dumps({"category": "billing", "priority": "high"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  {"a": 1}\n', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ("[1]", None),
        ('{"a": 1} trailing', None),
        ("", None),
    ],
)
def test_parse_json_object(text: str, expected: object) -> None:
    assert parse_json_object(text) == expected


def test_field_accuracy_and_exact_match() -> None:
    ref = {"category": "billing", "priority": "high"}
    assert field_accuracy({"category": " Billing "}, ref, "category") == 1.0
    assert field_accuracy({"category": "bug"}, ref, "category") == 0.0
    assert field_accuracy(None, ref, "category") == 0.0
    assert field_accuracy({}, ref, "priority") == 0.0
    assert exact_match({"priority": "high", "category": "billing"}, ref) == 1.0
    assert exact_match({"category": "billing"}, ref) == 0.0


def test_score_json_outputs_hand_computed() -> None:
    outputs = [
        '{"category": "billing", "priority": "high"}',  # exact
        '{"category": "billing", "priority": "urgent"}',  # valid JSON, breaks schema enum
        "not json",
        '{"category": "bug", "priority": "high", "extra": 1}',  # breaks additionalProperties
    ]
    scores = score_json_outputs(outputs, [REF] * 4, SCHEMA)
    assert scores["count"] == 4
    assert scores["json_valid"] == pytest.approx(3 / 4)
    assert scores["schema_valid"] == pytest.approx(1 / 4)
    assert scores["exact_match"] == pytest.approx(1 / 4)
    assert scores["field_accuracy"] == {"category": pytest.approx(2 / 4), "priority": pytest.approx(2 / 4)}
    assert scores["mean_field_accuracy"] == pytest.approx(0.5)


def test_score_without_schema_uses_reference_keys() -> None:
    scores = score_json_outputs(['{"priority": "high"}'], [REF])
    assert scores["schema_valid"] == 1.0
    assert scores["field_accuracy"] == {"category": 0.0, "priority": 1.0}


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 outputs for 1 references"):
        score_json_outputs(["{}", "{}"], [REF])
