"""Confidence intervals and significance for models scored on the same test set: pure numpy, seeded.

A statistic is either the per-example values of a metric that is their mean (a numpy array: the
vectorised fast path) or a function of an array of example indices (corpus metrics such as BLEU or
macro-F1, which are not means). Both forms draw the same resamples for the same seed and `n`, so a
result does not depend on which form was passed, and two models bootstrapped with one seed see the same
resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = np.ndarray | Sequence[float] | Callable[[np.ndarray], float]

# Resamples are drawn in blocks of about this many indices, so memory stays flat for large test sets.
_BLOCK_ELEMENTS = 1 << 20
# Deltas smaller than this are ties: float noise must not decide the sign of a difference.
_TIE = 1e-12


@dataclass(frozen=True)
class PairedResult:
    """B minus A on one metric, its bootstrap interval and how often chance alone could flip its sign."""

    delta: float
    low: float
    high: float
    p_value: float
    significant: bool


def _check(n: int, resamples: int, confidence: float) -> None:
    if n < 1:
        raise ValueError("cannot bootstrap an empty test set")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _resample_blocks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Rows of `n` indices drawn with replacement, `resamples` rows in all, a block of rows at a time."""
    rng = np.random.default_rng(seed)
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


def _per_example(statistic: Statistic, n: int) -> np.ndarray | None:
    """The per-example values when the statistic is their mean, else None (a callable)."""
    if callable(statistic):
        return None
    values = np.asarray(statistic, dtype=float)
    if values.shape != (n,):
        raise ValueError(f"expected {n} per-example values, got shape {values.shape}")
    return values


def _as_function(statistic: Statistic, n: int) -> Callable[[np.ndarray], float]:
    values = _per_example(statistic, n)
    if values is None:
        return statistic  # type: ignore[return-value]
    return lambda indices: float(values[indices].mean())


def _resampled(statistic: Statistic, n: int, resamples: int, seed: int) -> np.ndarray:
    """The statistic on every resample: one gather-and-mean per block for arrays, one call per row else."""
    values = _per_example(statistic, n)
    blocks = _resample_blocks(n, resamples, seed)
    if values is not None:
        return np.concatenate([values[block].mean(axis=1) for block in blocks])
    function = _as_function(statistic, n)
    return np.array([function(row) for block in blocks for row in block], dtype=float)


def _full_value(statistic: Statistic, n: int) -> float:
    return float(_as_function(statistic, n)(np.arange(n)))


def bootstrap_interval(
    statistic: Statistic, n: int, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(value on the whole set, low, high): the percentile bootstrap interval at `confidence`.

    The interval says how much the metric could move on another test set of the same size drawn the same
    way; it narrows roughly as 1/sqrt(n).
    """
    _check(n, resamples, confidence)
    samples = _resampled(statistic, n, resamples, seed)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return _full_value(statistic, n), float(low), float(high)


def paired_bootstrap(
    statistic_a: Statistic,
    statistic_b: Statistic,
    n: int,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedResult:
    """Is B better or worse than A on this test set, beyond what the choice of examples explains?

    Both systems are scored on the SAME resampled indices, so the per-example pairing (the same hard
    examples in both) cancels out of the difference. `delta` is B minus A on the whole set; `low`/`high`
    the percentile interval of the resampled deltas.

    p-value (two-sided): the fraction of resamples whose delta does not have the observed delta's sign
    (a resampled delta of 0 counts as a different sign), times 2, clipped to 1, and at least
    1/`resamples` since a finite bootstrap cannot show a smaller one. An observed delta of 0 has
    p-value 1. `significant` is p-value < 1 - confidence.
    """
    _check(n, resamples, confidence)
    values_a, values_b = _per_example(statistic_a, n), _per_example(statistic_b, n)
    if values_a is not None and values_b is not None:
        deltas = _resampled(values_b - values_a, n, resamples, seed)
    else:
        function_a, function_b = _as_function(statistic_a, n), _as_function(statistic_b, n)
        rows = (row for block in _resample_blocks(n, resamples, seed) for row in block)
        deltas = np.array([function_b(row) - function_a(row) for row in rows], dtype=float)
    delta = _full_value(statistic_b, n) - _full_value(statistic_a, n)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1.0 - tail])
    if abs(delta) <= _TIE:
        p_value = 1.0
    else:
        same_sign = deltas > _TIE if delta > 0 else deltas < -_TIE
        p_value = max(min(1.0, 2.0 * float(np.mean(~same_sign))), 1.0 / resamples)
    return PairedResult(float(delta), float(low), float(high), p_value, p_value < 1.0 - confidence)


def flips(correct_before: Sequence[bool], correct_after: Sequence[bool]) -> tuple[list[int], list[int]]:
    """(fixed, broken): indices wrong before and right after, and right before and wrong after.

    The counts behind a delta: +5 points can be 5 fixes, or 40 fixes and 35 new breakages.
    """
    if len(correct_before) != len(correct_after):
        raise ValueError(f"{len(correct_before)} results before but {len(correct_after)} after")
    before = np.asarray(correct_before, dtype=bool)
    after = np.asarray(correct_after, dtype=bool)
    fixed = np.flatnonzero(~before & after)
    broken = np.flatnonzero(before & ~after)
    return [int(i) for i in fixed], [int(i) for i in broken]
