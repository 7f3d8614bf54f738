from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from hone.evaluate import stats
from hone.evaluate.stats import Statistic, bootstrap_interval, flips, paired_bootstrap


def correct(right: int, total: int) -> np.ndarray:
    return np.array([1.0] * right + [0.0] * (total - right))


def test_interval_contains_the_value_and_narrows_with_more_data() -> None:
    small = bootstrap_interval(correct(12, 20), 20)
    large = bootstrap_interval(correct(1200, 2000), 2000)
    for value, low, high in (small, large):
        assert value == pytest.approx(0.6)
        assert low < value < high
    assert (large[2] - large[1]) < (small[2] - small[1]) / 5  # ~1/sqrt(n): 10x the width apart


def test_interval_of_a_constant_is_a_point() -> None:
    assert bootstrap_interval(np.full(30, 0.25), 30) == (0.25, 0.25, 0.25)


def test_interval_is_seeded_and_the_same_for_array_and_function() -> None:
    values = np.random.default_rng(1).random(50)
    first = bootstrap_interval(values, 50, resamples=300, seed=7)
    assert bootstrap_interval(values, 50, resamples=300, seed=7) == first
    assert bootstrap_interval(values, 50, resamples=300, seed=8) != first
    as_function = bootstrap_interval(lambda rows: float(values[rows].mean()), 50, resamples=300, seed=7)
    assert as_function == pytest.approx(first)


def test_interval_of_a_corpus_statistic_uses_the_function() -> None:
    values = np.arange(10, dtype=float)
    value, low, high = bootstrap_interval(lambda rows: float(np.max(values[rows])), 10, resamples=200)
    assert value == 9.0
    assert low <= high <= 9.0


def test_confidence_widens_the_interval() -> None:
    values = correct(50, 100)
    _, low_90, high_90 = bootstrap_interval(values, 100, confidence=0.90)
    _, low_99, high_99 = bootstrap_interval(values, 100, confidence=0.99)
    assert low_99 < low_90 and high_90 < high_99


def test_identical_systems_differ_by_nothing() -> None:
    values = correct(60, 100)
    result = paired_bootstrap(values, values.copy(), 100)
    assert (result.delta, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.p_value == 1.0
    assert not result.significant


def test_ninety_against_ten_is_significant() -> None:
    result = paired_bootstrap(correct(10, 100), correct(90, 100), 100)
    assert result.delta == pytest.approx(0.8)
    assert 0.6 < result.low < 0.8 < result.high < 0.95
    assert result.p_value == pytest.approx(1 / 1000)  # no resample reverses it: the floor
    assert result.significant
    reverse = paired_bootstrap(correct(90, 100), correct(10, 100), 100)
    assert reverse.delta == pytest.approx(-0.8)  # delta is B minus A
    assert reverse.significant


def test_one_example_of_difference_is_not_significant() -> None:
    before = correct(50, 100)
    after = before.copy()
    after[99] = 1.0
    result = paired_bootstrap(before, after, 100)
    assert result.delta == pytest.approx(0.01)
    assert result.low == 0.0
    assert result.p_value > 0.05
    assert not result.significant


def test_p_value_follows_its_definition() -> None:
    # A wrong on both, B right on example 0 only: observed delta 0.5. A resample's delta is <= 0 exactly when
    # it draws example 1 twice, probability 1/4, so p = 2 * 1/4 = 0.5.
    result = paired_bootstrap(np.array([0.0, 0.0]), np.array([1.0, 0.0]), 2, resamples=20000)
    assert result.delta == 0.5
    assert result.p_value == pytest.approx(0.5, abs=0.02)
    assert not result.significant


def test_paired_pairs_the_examples() -> None:
    # Both systems get the hard half wrong; B also fixes 12 of the easy half's 50 errors. Unpaired
    # intervals of 0.25 and 0.37 would overlap; resampling the same indices shows B is better.
    a = np.zeros(200)
    a[:50] = 1.0
    b = a.copy()
    b[50:62] = 1.0
    result = paired_bootstrap(a, b, 200)
    a_high = bootstrap_interval(a, 200)[2]
    b_low = bootstrap_interval(b, 200)[1]
    assert b_low < a_high  # the separate intervals overlap
    assert result.low > 0.0 and result.significant


def test_paired_with_functions_matches_arrays() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(40), rng.random(40) + 0.1
    from_arrays = paired_bootstrap(a, b, 40, resamples=500, seed=2)
    from_functions = paired_bootstrap(
        lambda rows: float(a[rows].mean()), lambda rows: float(b[rows].mean()), 40, resamples=500, seed=2
    )
    assert from_functions.delta == pytest.approx(from_arrays.delta)
    assert from_functions.low == pytest.approx(from_arrays.low)
    assert from_functions.p_value == pytest.approx(from_arrays.p_value)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="empty test set"):
        bootstrap_interval(np.array([]), 0)
    with pytest.raises(ValueError, match="expected 5 per-example values"):
        bootstrap_interval(np.ones(4), 5)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(np.ones(3), np.ones(3), 3, confidence=95)


def test_flips_by_hand() -> None:
    before = [True, False, False, True, True, False]
    after = [True, True, False, False, True, True]
    assert flips(before, after) == ([1, 5], [3])
    assert flips([], []) == ([], [])
    with pytest.raises(ValueError, match="2 results before but 1 after"):
        flips([True, False], [True])


def ladder_values(rungs: int, metrics: int, n: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [[rng.random(n) for _ in range(metrics)] for _ in range(rungs)]


def count_statistic_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every call of a statistic in the form of a function of resampled indices: once per resample
    on the per-resample path, a few times per statistic on the vectorised one."""
    calls = [0]
    real = stats._as_function

    def counting(statistic: stats.Statistic, n: int) -> Callable[[np.ndarray], float]:
        function = real(statistic, n)

        def counted(indices: np.ndarray) -> float:
            calls[0] += 1
            return function(indices)

        return counted

    monkeypatch.setattr(stats, "_as_function", counting)
    return calls


def ladder_statistics(rungs: list[list[Statistic]], n: int) -> list[tuple[float, ...]]:
    """Every metric's interval on every rung and its paired bootstrap against the first rung."""
    results: list[tuple[float, ...]] = []
    for metrics in rungs:
        for index, values in enumerate(metrics):
            results.append(bootstrap_interval(values, n))
            paired = paired_bootstrap(rungs[0][index], values, n)
            results.append((paired.delta, paired.low, paired.high, paired.p_value))
    return results


def test_a_whole_ladder_of_mean_metrics_takes_the_vectorised_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes the ladder's statistics fast: metrics that are means (arrays) are resampled with one
    gather-and-mean per block, never a Python call per resample. benchmarks/bootstrap_stats.py times it."""
    n = 150
    rungs = ladder_values(5, 10, n)
    calls = count_statistic_calls(monkeypatch)

    results = ladder_statistics(rungs, n)

    assert len(results) == 2 * 5 * 10
    assert calls[0] <= 3 * len(results), "only whole-set values, no per-resample calls"
    calls[0] = 0
    ladder_statistics([[lambda rows, v=v: float(v[rows].mean()) for v in rungs[0]]], n)
    assert calls[0] >= 3 * 1000 * 10, "the per-resample path calls the statistic once per resample"


def test_the_vectorised_path_gives_the_per_resample_results() -> None:
    """The fast path is the slow one, computed differently: the same resamples, the same figures."""
    n = 150
    arrays = ladder_values(2, 10, n)
    functions = [[lambda rows, v=v: float(v[rows].mean()) for v in metrics] for metrics in arrays]
    fast, reference = ladder_statistics(arrays, n), ladder_statistics(functions, n)
    assert any(low < high for _, low, high, *_ in fast), "the values vary: the intervals are not points"
    for vectorised, per_resample in zip(fast, reference, strict=True):
        assert vectorised == pytest.approx(per_resample, rel=1e-12, abs=1e-12)


def test_large_test_sets_are_resampled_in_bounded_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays flat: no block of resampled indices holds more than _BLOCK_ELEMENTS, and splitting the
    resamples into blocks changes nothing in the result."""
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", 64 * 150)
    shapes: list[tuple[int, ...]] = []
    real = stats._resample_blocks

    def recording(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
        for block in real(n, resamples, seed):
            shapes.append(block.shape)
            yield block

    monkeypatch.setattr(stats, "_resample_blocks", recording)
    values = np.random.default_rng(4).random(150)

    vectorised = bootstrap_interval(values, 150, resamples=1000, seed=3)
    per_resample = bootstrap_interval(lambda rows: float(values[rows].mean()), 150, resamples=1000, seed=3)

    assert shapes[:16] == [(64, 150)] * 15 + [(40, 150)]  # 1000 resamples, 64 rows a block
    assert all(rows * n <= 64 * 150 for rows, n in shapes)
    assert vectorised == pytest.approx(per_resample, rel=1e-12)
