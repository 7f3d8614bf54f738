"""Errors a person can act on.

Every failure caused by the user's input (a config, a data file, a model reference) is a `HoneError`:
the CLI prints its message without a traceback and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path


class HoneError(Exception):
    """A problem with the user's input or environment, explained in one message."""

    exit_code = 2


def located(path: str | Path, message: str, line: int | None = None, field: str | None = None) -> str:
    """Format "file line N: field: message" so every error reads the same way."""
    where = str(path)
    if line is not None:
        where += f" line {line}"
    if field:
        where += f": {field}"
    return f"{where}: {message}"
