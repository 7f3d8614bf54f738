"""`hone registry lineage`: from a version back to what made it, from a dataset version forward."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hone.errors import HoneError, quoted
from hone.registry.refs import parse_ref
from hone.registry.store import Registry, Version

HASH_PREFIX = re.compile(r"[0-9a-f]{8,64}")


def trained_on(registry: Registry, dataset: str) -> list[Version]:
    """Every registered version trained on the dataset version whose hash (or card version) starts so."""
    return [
        version
        for version in registry.versions()
        if version.tags.get("hone.dataset_hash", "").startswith(dataset)
        or version.tags.get("hone.dataset_card_version", "").startswith(dataset)
    ]


def dataset_of(text: str) -> str | None:
    """A dataset version named by `dataset:<hash>` or by a `hone data prepare` folder; None otherwise."""
    if text.startswith("dataset:"):
        prefix = text.removeprefix("dataset:")
        if not HASH_PREFIX.fullmatch(prefix):
            raise HoneError(f"{quoted(text)}: expected dataset:<8 to 64 hex digits of the dataset hash>")
        return prefix
    folder = Path(text)
    if (folder / "card.json").is_file():
        try:
            version = json.loads((folder / "card.json").read_text(encoding="utf-8"))["version"]
        except (ValueError, KeyError, TypeError):
            raise HoneError(f"{folder / 'card.json'}: not a dataset card (no 'version')") from None
        return str(version)
    return None


def lineage(registry: Registry, text: str) -> tuple[Version | None, str, list[Version]]:
    """(the version, its dataset, every version trained on that dataset) for a version reference;
    (None, the dataset, its versions) for `dataset:<hash>` or a prepared dataset folder."""
    dataset = dataset_of(text)
    if dataset is not None:
        return None, dataset, trained_on(registry, dataset)
    version = registry.version(parse_ref(text))
    dataset = version.tags.get("hone.dataset_hash", "")
    return version, dataset, trained_on(registry, dataset) if dataset else []
