"""Load one split for training or evaluation: any supported source and format, or one clear error."""

from __future__ import annotations

from pathlib import Path

from hone.data.formats import Example, load_examples
from hone.data.sources import read_all
from hone.errors import HoneError

SHOWN_PROBLEMS = 20


def load_split(path: Path, system_prompt: str | None = None, fmt: str = "auto") -> list[Example]:
    """Every example of the file, or a HoneError listing its problems (the first 20 of them)."""
    records, read_errors = read_all(path)
    examples, format_errors = load_examples(records, fmt=fmt, system_prompt=system_prompt)
    raise_problems(read_errors + format_errors, str(path))
    return examples


def raise_problems(problems: list[str], where: str) -> None:
    """One HoneError listing the first 20 problems, if there are any."""
    if not problems:
        return
    shown = problems[:SHOWN_PROBLEMS]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more (hone data check lists them all)" if more else ""
    raise HoneError(f"{len(problems)} problem(s) in {where}:\n  " + "\n  ".join(shown) + tail)


def require_kind(examples: list[Example], kind: str, method: str) -> None:
    """Refuse examples the method cannot train on, naming the first offending line."""
    for example in examples:
        if example.kind != kind:
            raise HoneError(
                f"{example.source} line {example.line}: method {method!r} trains on {kind} examples, "
                f"this one is {example.kind}"
            )
