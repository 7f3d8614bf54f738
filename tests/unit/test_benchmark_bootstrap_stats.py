"""benchmarks/bootstrap_stats.py on a small ladder: both paths are timed every round, give the same figures,
and the ratio comes from the measured times."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from hone.evaluate.stats import bootstrap_interval


def test_both_paths_are_timed_and_agree(
    benchmark_script: Callable[[str], ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    bench = benchmark_script("bootstrap_stats")
    options = ["--rungs", "2", "--metrics", "3", "--examples", "40", "--resamples", "200", "--rounds", "2"]

    result = bench.main(options)

    assert result["statistics"] == 2 * 2 * 3  # an interval and a paired test per metric and rung
    assert set(result["rounds"]) == set(bench.MODES)
    assert all(len(times) == 2 and min(times) > 0 for times in result["rounds"].values())
    seconds = result["seconds"]
    assert result["speedup"] == pytest.approx(seconds["per-resample"] / seconds["vectorised"])
    assert result["max_difference"] < 1e-12
    printed = capsys.readouterr().out
    assert f"| per-resample | {seconds['per-resample']:.3f} |" in printed
    assert f"{result['speedup']:.1f}x" in printed


def test_the_baseline_is_the_per_resample_path(benchmark_script: Callable[[str], ModuleType]) -> None:
    bench = benchmark_script("bootstrap_stats")
    values = bench.ladder_values(1, 2, 30)
    functions = bench.as_functions(values)

    assert all(callable(function) for function in functions[0])
    for array, function in zip(values[0], functions[0], strict=True):
        rows = [0, 3, 3, 29]
        assert function(rows) == pytest.approx(array[rows].mean())
        assert bootstrap_interval(function, 30, 100) == pytest.approx(bootstrap_interval(array, 30, 100))
    assert bench.ladder_values(1, 2, 30)[0][1].tolist() == values[0][1].tolist(), "seeded"
