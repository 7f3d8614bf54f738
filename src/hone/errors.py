"""Errors a person can act on.

Every failure caused by the user's input (a config, a data file, a model reference) is a `HoneError`:
the CLI prints its message without a traceback and exits with code 2.
"""

from __future__ import annotations

import reprlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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


QUOTED_LIMIT = 200
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = QUOTED_LIMIT
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8
_SHORT.maxlevel = 3


def quoted(value: Any, limit: int = QUOTED_LIMIT) -> str:
    """A value from the input as it is quoted in an error: its repr, cut to about `limit` characters.

    Errors quote what the person wrote; a 10 MB string or a list nested 1,000 deep must not become a
    10 MB message or a RecursionError while the error is being worded.
    """
    try:
        shown = _SHORT.repr(value)
    except ValueError:  # an int longer than Python converts to text (sys.get_int_max_str_digits)
        return f"<a {type(value).__name__} too long to show>"
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def clipped(text: str, limit: int = QUOTED_LIMIT) -> str:
    """Text from the input or a library's message, cut to `limit` characters for an error."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def listed(names: Iterable[Any], limit: int = 20, width: int = 60) -> str:
    """Comma-separated names from the input: the first `limit`, each cut to `width` characters."""
    every = [str(name) for name in names]
    shown = ", ".join(clipped(name, width) for name in every[:limit])
    return shown + (f", ... ({len(every) - limit} more)" if len(every) > limit else "")


def value_problem(exc: ValueError) -> str:
    """Python's words for a value a parser cannot hold, reworded for the person who wrote the file."""
    if "integer string conversion" in str(exc):  # past sys.get_int_max_str_digits() (Python 3.11+)
        return f"a number with more than {sys.get_int_max_str_digits()} digits"
    return clipped(str(exc))
