"""Task metrics for structured (JSON) outputs: pure functions, no I/O.

Each per-example function returns a float in [0, 1]; `score_json_outputs` averages them over a test set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from jsonschema import Draft202012Validator

FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The reply as a JSON object, or None. Surrounding whitespace and one ```json fence are allowed."""
    stripped = text.strip()
    fenced = FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def schema_valid(obj: dict[str, Any] | None, validator: Draft202012Validator | None) -> bool:
    if obj is None:
        return False
    return validator is None or validator.is_valid(obj)


def field_accuracy(predicted: dict[str, Any] | None, reference: dict[str, Any], field: str) -> float:
    """1.0 when the field is present and equal to the reference's (strings compared case-insensitively)."""
    if predicted is None or field not in predicted:
        return 0.0
    got, want = predicted[field], reference.get(field)
    if isinstance(got, str) and isinstance(want, str):
        return float(got.strip().lower() == want.strip().lower())
    return float(got == want)


def exact_match(predicted: dict[str, Any] | None, reference: dict[str, Any]) -> float:
    """1.0 when the parsed object equals the reference object (key order does not matter)."""
    return float(predicted is not None and predicted == reference)


def score_json_outputs(
    outputs: Sequence[str], references: Sequence[str], schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Aggregate JSON validity, schema adherence, per-field accuracy and exact match over a test set.

    Fields scored are the schema's `properties` when a schema is given, else the reference's keys.
    """
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} references")
    validator = Draft202012Validator(schema) if schema else None
    parsed_refs = [json.loads(ref) for ref in references]
    fields = list(schema.get("properties", {})) if schema else sorted({k for ref in parsed_refs for k in ref})
    totals = {"json_valid": 0.0, "schema_valid": 0.0, "exact_match": 0.0}
    per_field = dict.fromkeys(fields, 0.0)
    for output, reference in zip(outputs, parsed_refs, strict=True):
        predicted = parse_json_object(output)
        totals["json_valid"] += predicted is not None
        totals["schema_valid"] += schema_valid(predicted, validator)
        totals["exact_match"] += exact_match(predicted, reference)
        for name in fields:
            per_field[name] += field_accuracy(predicted, reference, name)
    count = max(len(outputs), 1)
    scores: dict[str, Any] = {name: value / count for name, value in totals.items()}
    scores["field_accuracy"] = {name: value / count for name, value in per_field.items()}
    scores["mean_field_accuracy"] = sum(scores["field_accuracy"].values()) / max(len(fields), 1)
    scores["count"] = len(outputs)
    return scores
