"""Registry references: `NAME` (its newest version), `NAME/VERSION` and `NAME@ALIAS`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hone.config import REGISTRY_NAME, REGISTRY_VERSION
from hone.errors import HoneError, quoted

NAME = re.compile(REGISTRY_NAME)
# MLflow reserves `latest` and `v<digits>` as alias names.
ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,62}")
RESERVED_ALIAS = re.compile(r"latest|v\d+")
REF = re.compile(f"{REGISTRY_VERSION}?")  # the `?` makes the version or alias part optional: NAME alone


@dataclass(frozen=True)
class Ref:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}/{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def check_name(name: str) -> str:
    """A registered model name: letters, digits, `.`, `_`, `-`, starting with a letter or digit."""
    if not NAME.fullmatch(name):
        raise HoneError(
            f"registry name {quoted(name)}: expected 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (such as 'support-tickets')"
        )
    return name


def check_alias(alias: str) -> str:
    if not ALIAS.fullmatch(alias) or RESERVED_ALIAS.fullmatch(alias):
        raise HoneError(
            f"alias {quoted(alias)}: expected lower-case letters, digits, '_' or '-', starting with a letter "
            "(such as 'staging' or 'production'); 'latest' and 'v<number>' are reserved"
        )
    return alias


def parse_ref(text: str) -> Ref:
    """`support-tickets`, `support-tickets/3` or `support-tickets@production`, else a HoneError."""
    match = REF.fullmatch(text)
    if match is None:
        raise HoneError(
            f"registry reference {quoted(text)}: expected NAME, NAME/VERSION or NAME@ALIAS "
            "(such as 'support-tickets/3' or 'support-tickets@production')"
        )
    version, alias = match["version"], match["alias"]
    if alias:
        check_alias(alias)
    return Ref(match["name"], int(version) if version else None, alias)


def is_ref(text: str) -> bool:
    """Whether the text reads as a registry reference with a version or alias (`NAME/3`, `NAME@prod`)."""
    match = REF.fullmatch(text)
    return bool(match and (match["version"] or match["alias"]))
