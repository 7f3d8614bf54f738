"""Online task checks: what can be said about an answer as it is served, with no reference to compare to.

With `monitor.json_schema` every answer is parsed as JSON and validated against the schema; with
`monitor.regex` it is matched against the pattern. The server counts the results per version in
`/metrics`, and `hone monitor` recomputes them from the request log with the same function, so the two
agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from hone.config import MonitorConfig
from hone.errors import HoneError
from hone.evaluate.metrics import parse_json_object, regex_match, schema_valid


@dataclass
class OnlineChecks:
    validator: Draft202012Validator | None
    json: bool
    pattern: re.Pattern[str] | None

    @classmethod
    def from_config(cls, monitor: MonitorConfig) -> OnlineChecks:
        validator = None
        if monitor.json_schema is not None:
            path = monitor.json_schema
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise HoneError(f"{path}: JSON Schema file not found (monitor.json_schema)") from None
            except json.JSONDecodeError as exc:
                raise HoneError(
                    f"{path} line {exc.lineno}: not valid JSON: {exc.msg} (monitor.json_schema)"
                ) from None
            Draft202012Validator.check_schema(schema)
            validator = Draft202012Validator(schema)
        pattern = None
        if monitor.regex is not None:
            try:
                pattern = re.compile(monitor.regex)
            except re.error as exc:
                raise HoneError(f"monitor.regex: {monitor.regex!r} is not a pattern: {exc}") from exc
        return cls(validator, validator is not None, pattern)

    @property
    def names(self) -> list[str]:
        return (["json_valid", "schema_valid"] if self.json else []) + (["regex"] if self.pattern else [])

    def __call__(self, answer: str) -> dict[str, bool]:
        """Each configured check's result on one answer."""
        results: dict[str, Any] = {}
        if self.json:
            parsed = parse_json_object(answer)
            results["json_valid"] = parsed is not None
            results["schema_valid"] = schema_valid(parsed, self.validator)
        if self.pattern is not None:
            results["regex"] = regex_match(answer, self.pattern) == 1.0
        return results
