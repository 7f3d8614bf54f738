"""Content checks on training data, run by `hone data check` before any compute is spent.

Everything here is a pure function over strings: no files, no model, no tokenizer. A fine-tuning run
memorises what it is shown, so repeated examples (exact and near duplicates, which over-weight some
examples) and examples shared between the training and evaluation splits (leakage, which inflates
evaluation scores) are cheapest to catch here; so are lengths that training would cut short. Personal data
and secrets are found by hone.data.pii.

The functions must stay fast for ~100,000 examples on a small machine: near duplicates use MinHash
signatures with LSH banding, computed with numpy.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NearDuplicate:
    """Two examples (first < second) whose estimated Jaccard similarity reaches the threshold."""

    first: int
    second: int
    similarity: float


@dataclass(frozen=True)
class Overlap:
    """A training example that also appears (exact) or nearly appears in another split."""

    train_index: int
    other_index: int
    similarity: float
    exact: bool


@dataclass(frozen=True)
class LengthStats:
    """Summary of example lengths (in tokens or characters, whatever the caller measured)."""

    count: int
    min: int
    median: float
    p95: int
    max: int
    mean: float
    total: int


# --------------------------------------------------------------------------------------------------
# Duplicates and leakage

_NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]+|_+")
# The same deletion as a str.translate table for ASCII text, which is about three times faster.
_ASCII_DELETIONS = str.maketrans(
    "", "", "".join(char for char in map(chr, range(128)) if _NOT_WORD_OR_SPACE.match(char))
)
_MINHASH_SEED = 20240517
_CANDIDATE_CHUNK = 200_000


def normalise(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace: the form in which two examples are "the same".

    Examples that differ only in case, spacing or punctuation teach a model the same thing twice.
    """
    lowered = text.lower()
    if lowered.isascii():
        return " ".join(lowered.translate(_ASCII_DELETIONS).split())
    return " ".join(_NOT_WORD_OR_SPACE.sub("", lowered).split())


def _group_by_normalised(texts: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, text in enumerate(texts):
        groups.setdefault(normalise(text), []).append(index)
    return groups


def exact_duplicates(texts: Sequence[str]) -> list[list[int]]:
    """Groups (two or more, each sorted, ordered by first index) of examples with equal normalised text."""
    return [indices for indices in _group_by_normalised(texts).values() if len(indices) > 1]


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads combined word hashes evenly over 64 bits (wrapping arithmetic)."""
    values = values ^ (values >> np.uint64(30))
    values *= np.uint64(0xBF58476D1CE4E5B9)
    values ^= values >> np.uint64(27)
    values *= np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _word_hashes(normalised: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """crc32 of every word of every (normalised) text, flat, and the number of words of each text.

    crc32 is stable across processes, unlike the salted `hash()`, and each distinct word is hashed once.
    """
    word_counts = np.fromiter((text.count(" ") + 1 if text else 0 for text in normalised), np.int64)
    all_words = " ".join(normalised).split()
    if len(all_words) != word_counts.sum():
        raise ValueError("texts must be normalised (single spaces, no leading or trailing space)")
    word_hash = {word: zlib.crc32(word.encode()) for word in dict.fromkeys(all_words)}
    return np.fromiter(map(word_hash.__getitem__, all_words), np.uint64, len(all_words)), word_counts


def _shingle_hashes(normalised: Sequence[str], shingle: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every word `shingle`-gram, grouped by text; returns (hashes, start offsets).

    The n-gram hashes are combined from the word hashes in numpy (a weighted sum, then mixed), so no
    Python loop runs per shingle. A text shorter than `shingle` words is one shingle: its whole text.
    """
    word_hashes, word_counts = _word_hashes(normalised)
    shingle_counts = np.maximum(word_counts - shingle + 1, 1)
    offsets = np.cumsum(shingle_counts) - shingle_counts
    hashes = np.empty(int(shingle_counts.sum()), dtype=np.uint64)

    window_count = max(word_hashes.size - shingle + 1, 0)
    weights = _mix64(np.arange(1, shingle + 1, dtype=np.uint64)) | np.uint64(1)
    combined = np.zeros(window_count, dtype=np.uint64)
    for position in range(shingle):
        combined += word_hashes[position : position + window_count] * weights[position]
    is_long = word_counts >= shingle
    destinations = np.flatnonzero(np.repeat(is_long, shingle_counts))
    word_starts = np.cumsum(word_counts) - word_counts
    shift = np.repeat((word_starts - offsets)[is_long], shingle_counts[is_long])
    hashes[destinations] = combined[destinations + shift]

    short_texts = np.flatnonzero(~is_long)
    hashes[offsets[short_texts]] = np.fromiter(
        (zlib.crc32(normalised[i].encode()) ^ 0xA5A5A5A5 for i in short_texts), np.uint64, short_texts.size
    )
    return _mix64(hashes) >> np.uint64(32), offsets


def _check_similarity_arguments(threshold: float, num_perm: int, shingle: int) -> None:
    """Fail early on settings that would silently report everything or nothing."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 1 or shingle < 1:
        raise ValueError(f"num_perm and shingle must be at least 1, got {num_perm} and {shingle}")


def _minhash_signatures(normalised: Sequence[str], num_perm: int, shingle: int) -> np.ndarray:
    """MinHash signature (num_perm uint32 minima) per text, with fixed seeds so runs are reproducible.

    Each permutation is the multiply-add-shift hash ((a * x + b) mod 2**64) >> 32 of a 32-bit shingle
    hash x; the share of equal minima between two texts estimates the Jaccard similarity of their
    shingle sets.
    """
    hashes, offsets = _shingle_hashes(normalised, shingle)
    rng = np.random.default_rng(_MINHASH_SEED)
    multipliers = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    increments = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    signatures = np.empty((len(normalised), num_perm), dtype=np.uint32)
    if not len(normalised):
        return signatures
    permuted = np.empty_like(hashes)
    for column in range(num_perm):
        np.multiply(hashes, multipliers[column], out=permuted)
        permuted += increments[column]
        permuted >>= np.uint64(32)
        signatures[:, column] = np.minimum.reduceat(permuted, offsets)
    return signatures


def _lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising missed pairs above the threshold plus candidates below it.

    Missed pairs weigh more than extra candidates: every candidate is verified on its signature anyway,
    and MinHash estimates scatter around the true similarity, so the banding aims a little low.
    """
    grid = np.linspace(0.0, 1.0, 201)
    aim = max(threshold - 0.15, 0.05)
    best: tuple[float, int, int] = (math.inf, 1, num_perm)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        found = 1.0 - (1.0 - grid**rows) ** bands
        false_positive = np.trapezoid(found[grid < aim], grid[grid < aim])
        false_negative = np.trapezoid(1.0 - found[grid >= aim], grid[grid >= aim])
        cost = 0.3 * false_positive + 0.7 * false_negative
        if cost < best[0]:
            best = (cost, bands, rows)
    return best[1], best[2]


def _bucket_pairs(keys: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All index pairs (i, j) with equal keys, yielded in arrays, one offset within a bucket at a time."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    boundaries = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [keys.size]])
    bucket_end = np.repeat(ends, ends - starts)
    positions = np.flatnonzero(bucket_end - np.arange(keys.size) > 1)
    offset = 1
    while positions.size:
        yield order[positions], order[positions + offset]
        offset += 1
        positions = positions[bucket_end[positions] - positions > offset]


def _similar_pairs(
    signatures: np.ndarray,
    threshold: float,
    keep: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of rows whose signatures agree on at least `threshold` of their entries.

    LSH banding proposes candidates (rows equal on a whole band); each is then verified on the full
    signature. `keep`, when given, is a function of (i, j) arrays that filters candidates first.
    """
    count, num_perm = signatures.shape
    bands, rows = _lsh_bands(threshold, num_perm)
    band_weights = _mix64(np.arange(1, rows + 1, dtype=np.uint64))
    found: list[np.ndarray] = []
    for band in range(bands):
        block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
        keys = _mix64((block * band_weights).sum(axis=1, dtype=np.uint64))
        for left, right in _bucket_pairs(keys):
            first, second = np.minimum(left, right), np.maximum(left, right)
            if keep is not None:
                mask = keep(first, second)
                first, second = first[mask], second[mask]
            for start in range(0, first.size, _CANDIDATE_CHUNK):
                a, b = first[start : start + _CANDIDATE_CHUNK], second[start : start + _CANDIDATE_CHUNK]
                agree = (signatures[a] == signatures[b]).sum(axis=1)
                passed = agree >= math.ceil(threshold * num_perm - 1e-9)
                found.append(a[passed].astype(np.int64) * count + b[passed])
    encoded = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
    first, second = encoded // max(count, 1), encoded % max(count, 1)
    similarity = (signatures[first] == signatures[second]).mean(axis=1) if encoded.size else np.empty(0)
    return first, second, similarity


def near_duplicates(
    texts: Sequence[str], threshold: float = 0.85, num_perm: int = 64, shingle: int = 5
) -> list[NearDuplicate]:
    """Pairs of examples whose estimated Jaccard similarity over word `shingle`-grams is >= threshold.

    Exact duplicates (equal normalised text) are left to `exact_duplicates`: the signatures are computed
    once per distinct normalised text, and every example sharing that text takes part in its pairs.
    Sorted by (first, second); deterministic.
    """
    _check_similarity_arguments(threshold, num_perm, shingle)
    groups = list(_group_by_normalised(texts).items())
    signatures = _minhash_signatures([text for text, _ in groups], num_perm, shingle)
    first, second, similarity = _similar_pairs(signatures, threshold)
    pairs: list[NearDuplicate] = []
    for u, v, score in zip(first.tolist(), second.tolist(), similarity.tolist(), strict=True):
        for i in groups[u][1]:
            for j in groups[v][1]:
                pairs.append(NearDuplicate(min(i, j), max(i, j), score))
    return sorted(pairs, key=lambda pair: (pair.first, pair.second))


def cross_split_overlap(
    train: Sequence[str],
    other: Sequence[str],
    threshold: float = 0.85,
    num_perm: int = 64,
    shingle: int = 5,
) -> list[Overlap]:
    """Examples of `other` (an eval or test split) that are also in `train`, exactly or nearly.

    Such leakage makes evaluation measure memorisation. Exact matches have similarity 1.0 and
    exact=True; near ones carry the estimated Jaccard. Sorted by (train_index, other_index).
    """
    _check_similarity_arguments(threshold, num_perm, shingle)
    train_groups = _group_by_normalised(train)
    other_groups = _group_by_normalised(other)
    distinct = list(dict.fromkeys([*train_groups, *other_groups]))
    in_train = np.array([text in train_groups for text in distinct], dtype=bool)
    in_other = np.array([text in other_groups for text in distinct], dtype=bool)
    overlaps = [
        Overlap(i, j, 1.0, True)
        for text in distinct
        if text in train_groups and text in other_groups
        for i in train_groups[text]
        for j in other_groups[text]
    ]

    def crosses_splits(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return (in_train[first] & in_other[second]) | (in_train[second] & in_other[first])

    signatures = _minhash_signatures(distinct, num_perm, shingle)
    first, second, similarity = _similar_pairs(signatures, threshold, keep=crosses_splits)
    for u, v, score in zip(first.tolist(), second.tolist(), similarity.tolist(), strict=True):
        for train_text, other_text in ((distinct[u], distinct[v]), (distinct[v], distinct[u])):
            for i in train_groups.get(train_text, ()):
                overlaps.extend(Overlap(i, j, score, False) for j in other_groups.get(other_text, ()))
    return sorted(overlaps, key=lambda overlap: (overlap.train_index, overlap.other_index))


# --------------------------------------------------------------------------------------------------
# Lengths


def length_stats(lengths: Sequence[int]) -> LengthStats:
    """Count, min, median, 95th percentile (nearest rank), max, mean and total; all zero when empty.

    The p95 and max show how long the longest examples run, which sets a sensible max_length.
    """
    if not lengths:
        return LengthStats(count=0, min=0, median=0.0, p95=0, max=0, mean=0.0, total=0)
    ordered = sorted(lengths)
    count = len(ordered)
    middle = count // 2
    median = float(ordered[middle]) if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    total = sum(ordered)
    return LengthStats(
        count=count,
        min=ordered[0],
        median=median,
        p95=ordered[max(math.ceil(0.95 * count), 1) - 1],
        max=ordered[-1],
        mean=total / count,
        total=total,
    )


def truncation_rate(lengths: Sequence[int], max_length: int) -> float:
    """Share of examples longer than max_length, i.e. those training would cut short (0.0 when empty)."""
    if not lengths:
        return 0.0
    return sum(length > max_length for length in lengths) / len(lengths)
