"""benchmarks/data_poisoning.py on a small generated set: every step is timed on both sets, and neither the
example task nor the generator's tickets raise a flood or trigger warning."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType


def test_every_step_is_timed_and_the_generated_tickets_are_clean(
    benchmark_script: Callable[[str], ModuleType],
) -> None:
    bench = benchmark_script("data_poisoning")

    report = bench.main(["--examples", "400", "--seed", "3"])

    assert [result["examples"] for result in report.values()] == [600, 400]
    for result in report.values():
        assert set(result["seconds"]) == {
            "exact duplicates",
            "near duplicates (MinHash)",
            "floods + trigger phrases",
        }
        assert all(seconds > 0 for seconds in result["seconds"].values())
        assert result["warnings"] == []
        assert "outliers" not in result
