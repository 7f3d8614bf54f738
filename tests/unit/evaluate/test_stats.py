from __future__ import annotations

import time

import numpy as np
import pytest

from hone.evaluate.stats import bootstrap_interval, flips, paired_bootstrap


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


def test_mean_metrics_for_a_whole_ladder_take_well_under_a_second() -> None:
    rng = np.random.default_rng(0)
    rungs = [[rng.random(150) for _ in range(10)] for _ in range(5)]
    began = time.perf_counter()
    for metrics in rungs:
        for index, values in enumerate(metrics):
            bootstrap_interval(values, 150)
            paired_bootstrap(rungs[0][index], values, 150)
    assert time.perf_counter() - began < 1.0
