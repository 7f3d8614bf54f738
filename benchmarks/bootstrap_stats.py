"""python benchmarks/bootstrap_stats.py [--rungs 5 --metrics 10 --examples 150 --resamples 1000 --rounds 3]

The statistics of one evaluation ladder, as `hone evaluate` computes them: a bootstrap interval for every
metric of every rung and a paired bootstrap of each rung against the first, on per-example values drawn
from a fixed seed. Two ways, side by side, interleaved round by round:
  per-resample  the baseline: each metric passed as a function of the resampled indices, called once per
                resample (the path corpus metrics such as BLEU take, since they are not means)
  vectorised    hone's path for metrics that are means: the per-example values as an array, one
                gather-and-mean per block of resamples
Both draw the same resamples, so they must give the same figures; the script checks that, then prints the
best time of each over the rounds and the ratio.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hone.evaluate.stats import Statistic, bootstrap_interval, paired_bootstrap

MODES = ("per-resample", "vectorised")


def ladder_values(rungs: int, metrics: int, examples: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Per-example scores in [0, 1]: rungs x metrics arrays of `examples` values."""
    rng = np.random.default_rng(seed)
    return [[rng.random(examples) for _ in range(metrics)] for _ in range(rungs)]


def as_functions(values: list[list[np.ndarray]]) -> list[list[Callable[[np.ndarray], float]]]:
    return [[lambda rows, v=v: float(v[rows].mean()) for v in metrics] for metrics in values]


def ladder_statistics(rungs: list[list[Statistic]], n: int, resamples: int) -> list[tuple[float, ...]]:
    """Every metric's interval on every rung and its paired bootstrap against the first rung."""
    results: list[tuple[float, ...]] = []
    for metrics in rungs:
        for index, statistic in enumerate(metrics):
            results.append(bootstrap_interval(statistic, n, resamples))
            paired = paired_bootstrap(rungs[0][index], statistic, n, resamples)
            results.append((paired.delta, paired.low, paired.high, paired.p_value))
    return results


def run(rungs: int, metrics: int, examples: int, resamples: int, rounds: int) -> dict[str, Any]:
    values = ladder_values(rungs, metrics, examples)
    inputs: dict[str, list[list[Any]]] = {"per-resample": as_functions(values), "vectorised": values}
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    results: dict[str, list[tuple[float, ...]]] = {}
    for round_index in range(rounds):
        order = MODES if round_index % 2 == 0 else MODES[::-1]
        for mode in order:
            began = time.perf_counter()
            results[mode] = ladder_statistics(inputs[mode], examples, resamples)
            seconds[mode].append(time.perf_counter() - began)
    difference = max(
        abs(a - b)
        for slow, fast in zip(results["per-resample"], results["vectorised"], strict=True)
        for a, b in zip(slow, fast, strict=True)
    )
    best = {mode: min(times) for mode, times in seconds.items()}
    return {
        "statistics": len(results["vectorised"]),
        "rounds": seconds,
        "seconds": best,
        "speedup": best["per-resample"] / best["vectorised"],
        "max_difference": difference,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", type=int, default=5)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--examples", type=int, default=150)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.rungs, args.metrics, args.examples, args.resamples, args.rounds)
    print(
        f"{args.rungs} rungs x {args.metrics} metrics on {args.examples} examples, {args.resamples} "
        f"resamples: {result['statistics']} intervals and paired tests, best of {args.rounds} rounds"
    )
    print("| path | seconds |\n|---|---:|")
    for mode in MODES:
        print(f"| {mode} | {result['seconds'][mode]:.3f} |")
    print(f"vectorised / per-resample: {result['speedup']:.1f}x faster")
    print(f"largest difference between the two paths' figures: {result['max_difference']:.2e}")
    return result


if __name__ == "__main__":
    main()
