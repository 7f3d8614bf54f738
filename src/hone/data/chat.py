"""Chat examples (`{"messages": [...]}` JSONL, OpenAI fine-tuning format): read and checked line by line.

Every problem names the file, the line and the field, so a person can fix the data without a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hone.errors import HoneError, located

ROLES = ("system", "user", "assistant")


@dataclass
class ChatExample:
    messages: list[dict[str, str]]
    source: str
    line: int


@dataclass
class CheckReport:
    """Problems found in one file: errors make training wrong; warnings make it weak."""

    path: Path
    examples: list[ChatExample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def message_problems(messages: Any) -> list[tuple[str, str]]:
    """(field, problem) pairs for one example's `messages`; empty when it is trainable."""
    if not isinstance(messages, list) or not messages:
        return [("messages", "expected a non-empty list of {role, content} objects")]
    problems = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.append((where, f"expected an object, got {type(message).__name__}"))
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.append((f"{where}.role", f"role {role!r}; expected one of {', '.join(ROLES)}"))
        if not isinstance(content, str):
            problems.append((f"{where}.content", f"expected a string, got {type(content).__name__}"))
        elif not content.strip() and role == "assistant":
            problems.append((f"{where}.content", "assistant message is empty"))
    if not problems and messages[-1].get("role") != "assistant":
        problems.append(
            ("messages", "last message must be the assistant's answer (nothing to learn otherwise)")
        )
    return problems


def read_chat_jsonl(path: Path, system_prompt: str | None = None) -> CheckReport:
    """Read a chat JSONL file, collecting every problem instead of stopping at the first."""
    report = CheckReport(path=path)
    if not path.is_file():
        report.errors.append(located(path, "file not found"))
        return report
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            parsed = parse_line(path, number, raw, report)
            if parsed is None:
                continue
            messages = parsed.get("messages")
            problems = message_problems(messages)
            for field_name, problem in problems:
                report.errors.append(located(path, problem, number, field_name))
            if problems:
                continue
            messages = [{"role": m["role"], "content": m["content"]} for m in messages]
            if system_prompt and messages[0]["role"] != "system":
                messages.insert(0, {"role": "system", "content": system_prompt})
            report.examples.append(ChatExample(messages=messages, source=str(path), line=number))
    if not report.examples and not report.errors:
        report.errors.append(located(path, "no examples (the file is empty)"))
    return report


def parse_line(path: Path, number: int, raw: bytes, report: CheckReport) -> dict[str, Any] | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.errors.append(located(path, f"not UTF-8 (byte {exc.start})", number))
        return None
    text = text.lstrip("\ufeff") if number == 1 else text
    if not text.strip():
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        report.errors.append(located(path, f"malformed JSON: {exc.msg} (column {exc.colno})", number))
        return None
    if not isinstance(parsed, dict):
        report.errors.append(located(path, f"expected a JSON object, got {type(parsed).__name__}", number))
        return None
    return parsed


def load_chat_split(path: Path, system_prompt: str | None = None) -> list[ChatExample]:
    """Load a split or raise one HoneError listing its problems (at most 20 shown)."""
    report = read_chat_jsonl(path, system_prompt)
    if report.errors:
        shown = report.errors[:20]
        more = len(report.errors) - len(shown)
        tail = f"\n  ... and {more} more" if more else ""
        raise HoneError(f"{len(report.errors)} problem(s) in {path}:\n  " + "\n  ".join(shown) + tail)
    return report.examples
