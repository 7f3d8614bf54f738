"""`hone data prepare`: sources -> one dataset version folder, named by its content hash.

    <out>/<hash[:16]>/
      train.jsonl, validation.jsonl, test.jsonl   normalised examples (hone's canonical JSONL)
      card.json                                   statistics, sources with their sha256, options, checks

The split is deterministic (seeded, optionally stratified by a label), so the same sources and options
always give the same files and the same hash; a run that trains on the folder records that hash.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hone.data import checks
from hone.data.check import example_text
from hone.data.formats import Example, load_examples
from hone.data.load import raise_problems
from hone.data.pii import find_pii, redact_pii
from hone.data.sources import SourceSpec, mix_sources
from hone.data.version import dataset_hash
from hone.errors import HoneError
from hone.io import atomic_write_json, atomic_write_jsonl, file_digest, staged_folder

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class PrepareOptions:
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 42
    stratify_by: str | None = None
    redact_pii: bool = False
    dedup: bool = True
    fmt: str = "auto"
    system_prompt: str | None = None


def parse_source(text: str) -> SourceSpec:
    """`path` or `path@weight` (a relative sampling rate, see hone.data.sources.mix_sources)."""
    path, sep, weight = text.rpartition("@")
    if not sep or not weight.replace(".", "", 1).isdigit():
        return SourceSpec(Path(text))
    return SourceSpec(Path(path), float(weight))


def label_of(example: Example, field: str) -> str:
    """Stratification label: a field of the final reply parsed as JSON, else the reply itself."""
    replies = example.chosen or [m for m in example.messages if m["role"] == "assistant"]
    reply = replies[-1]["content"] if replies else (example.text or "")
    try:
        parsed = json.loads(reply)
    except (RecursionError, ValueError):  # not JSON, nested too deeply, or a number too long to read
        return reply.strip()
    return str(parsed.get(field)) if isinstance(parsed, dict) else reply.strip()


def allocate(count: int, fractions: Sequence[float]) -> list[int]:
    """Split `count` items by `fractions` with the largest-remainder rule (sizes always sum to count)."""
    total = sum(fractions)
    exact = [count * f / total for f in fractions]
    sizes = [int(value) for value in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (exact[i] - sizes[i], -i), reverse=True)
    for index in by_remainder[: count - sum(sizes)]:
        sizes[index] += 1
    return sizes


def split_examples(examples: list[Example], options: PrepareOptions) -> dict[str, list[Example]]:
    """Seeded split; with `stratify_by`, each label is split on its own so every split keeps the mix."""
    strata: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        key = label_of(example, options.stratify_by) if options.stratify_by else ""
        strata[key].append(index)
    assigned: dict[str, list[int]] = {name: [] for name in SPLITS}
    generator = random.Random(options.seed)
    for key in sorted(strata):
        indices = strata[key]
        generator.shuffle(indices)
        start = 0
        for name, size in zip(SPLITS, allocate(len(indices), options.fractions), strict=True):
            assigned[name].extend(indices[start : start + size])
            start += size
    return {name: [examples[i] for i in sorted(indices)] for name, indices in assigned.items()}


def redact_example(example: Example) -> tuple[Example, int]:
    """The example with PII replaced by placeholders in every text field, and how many were replaced."""
    found = 0

    def clean(text: str) -> str:
        nonlocal found
        hits = find_pii(text)
        found += len(hits)
        return redact_pii(text, hits) if hits else text

    def clean_messages(messages: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if messages is None:
            return None
        return [{**m, "content": clean(m["content"])} for m in messages]

    redacted = replace(
        example,
        messages=clean_messages(example.messages) or [],
        chosen=clean_messages(example.chosen),
        rejected=clean_messages(example.rejected),
        text=clean(example.text) if example.text is not None else None,
    )
    return redacted, found


def canonical_row(example: Example) -> dict[str, Any]:
    """hone's JSONL form of an example; reading it back gives the same Example (and the same hash)."""
    if example.kind == "text":
        return {"text": example.text}
    if example.kind == "preference":
        return {"prompt": example.messages, "chosen": example.chosen, "rejected": example.rejected}
    return {"messages": example.messages}


def drop_duplicates(examples: list[Example]) -> tuple[list[Example], int]:
    groups = checks.exact_duplicates([example_text(e) for e in examples])
    dropped = {index for group in groups for index in group[1:]}
    return [e for i, e in enumerate(examples) if i not in dropped], len(dropped)


def prepare_dataset(sources: list[SourceSpec], out: Path, options: PrepareOptions) -> Path:
    """Write the dataset version folder (atomically; reused when the same content exists) and return it."""
    check_out_folder(out)
    records = mix_sources(sources, options.seed)
    examples, errors = load_examples(records, fmt=options.fmt, system_prompt=options.system_prompt)
    raise_problems(errors, "the sources")
    redactions = 0
    if options.redact_pii:
        pairs = [redact_example(e) for e in examples]
        examples, redactions = [p[0] for p in pairs], sum(p[1] for p in pairs)
    duplicates = 0
    if options.dedup:
        examples, duplicates = drop_duplicates(examples)
    splits = split_examples(examples, options)
    version = dataset_hash(splits)
    card = lambda: dataset_card(version, sources, splits, options, redactions, duplicates)  # noqa: E731
    return write_dataset_version(out, version, splits, card)


def write_dataset_version(
    out: Path,
    version: str,
    files: dict[str, list[Example]],
    card: dict[str, Any] | Callable[[], dict[str, Any]],
) -> Path:
    """`out/<version[:16]>/`: a JSONL file of canonical rows per entry of `files`, and `card.json`, staged
    and renamed into place whole (a killed writer leaves only a hidden staging folder, which the next one
    removes); a version already written with the same content is reused as it is. A card that takes long
    to compute (prepare's checks) is passed as a function, called only when the version is new."""
    target = out / version[:16]
    if (target / "card.json").is_file():
        return target
    try:
        with staged_folder(target) as staging:
            for name, members in files.items():
                atomic_write_jsonl(staging / f"{name}.jsonl", [canonical_row(e) for e in members])
            atomic_write_json(staging / "card.json", card() if callable(card) else card)
    except OSError as exc:
        raise HoneError(f"{out}: could not write the dataset version ({exc.strerror or exc})") from None
    return target


def check_out_folder(out: Path) -> None:
    """Refuse an --out that cannot hold dataset versions before any work is done: an existing file, or a
    path under one."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is" if folder == out else f"is under {folder}, which is"
                raise HoneError(
                    f"{out}: --out {where} an existing file; it must be a folder for dataset versions"
                )
            return


def dataset_card(
    version: str,
    sources: list[SourceSpec],
    splits: dict[str, list[Example]],
    options: PrepareOptions,
    redactions: int,
    duplicates: int,
) -> dict[str, Any]:
    words = {
        name: [len(checks.normalise(example_text(e)).split()) for e in members]
        for name, members in splits.items()
    }
    card: dict[str, Any] = {
        "version": version,
        "sources": [
            {"path": str(spec.path), "weight": spec.weight, "sha256": source_digest(spec.path)}
            for spec in sources
        ],
        "options": {**options.__dict__, "fractions": list(options.fractions)},
        "splits": {
            name: {
                "examples": len(members),
                "kinds": dict(Counter(e.kind for e in members)),
                "words": checks.length_stats(words[name]).__dict__,
            }
            for name, members in splits.items()
        },
        "pii_redacted": redactions,
        "duplicates_dropped": duplicates,
        "checks": content_checks(splits),
    }
    if options.stratify_by:
        card["labels"] = {
            name: dict(sorted(Counter(label_of(e, options.stratify_by) for e in members).items()))
            for name, members in splits.items()
        }
    return card


def content_checks(splits: dict[str, list[Example]]) -> dict[str, Any]:
    """What `hone data check` would say about the written splits' content (token lengths need a model)."""
    texts = {name: [example_text(e) for e in members] for name, members in splits.items()}
    report: dict[str, Any] = {}
    for name, members in texts.items():
        pii = Counter(hit.kind for text in members for hit in find_pii(text))
        report[name] = {
            "exact_duplicate_groups": len(checks.exact_duplicates(members)),
            "near_duplicate_pairs": len(checks.near_duplicates(members)),
            "pii": dict(sorted(pii.items())),
        }
    for name in ("validation", "test"):
        overlaps = checks.cross_split_overlap(texts["train"], texts[name])
        report[f"train_{name}_overlap"] = {
            "exact": sum(o.exact for o in overlaps),
            "near": sum(not o.exact for o in overlaps),
        }
    return report


def source_digest(path: Path) -> str:
    """sha256 of a file, or over every file of a folder (sorted by name) for `datasets` folders."""
    if path.is_file():
        return file_digest(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file_digest(file).encode())
    return digest.hexdigest()
