"""Cost per request and the recommendation, with hand-computed figures."""

from __future__ import annotations

from typing import Any

import pytest

from hone.evaluate import cost


def test_latency_percentiles_and_throughput() -> None:
    timing = cost.latency([1.0, 2.0, 3.0, 4.0], total_seconds=2.0, batch_size=4)
    assert timing["p50_seconds"] == pytest.approx(2.5)
    assert timing["p95_seconds"] == pytest.approx(3.85)  # numpy's linear interpolation: 3 + 0.85
    assert timing["requests_per_second"] == pytest.approx(2.0)


def test_self_hosted_and_api_prices() -> None:
    # $0.36/hour = $0.0001/s; 2 requests/s -> $0.00005 per request -> $0.05 per 1,000
    assert cost.self_hosted_per_1000(2.0, 0.36) == pytest.approx(0.05)
    assert cost.self_hosted_per_1000(0.0, 0.36) == float("inf")
    # 500 prompt tokens at $0.15/M + 100 completion tokens at $0.60/M = $0.000135 per request
    assert cost.api_per_1000(500, 100, 0.15, 0.60) == pytest.approx(0.135)
    assert cost.training_cost(1800, 2.0) == pytest.approx(1.0)


def rung(name: str, kind: str, value: float, per_1000: float, training: float = 0.0, **extra: Any) -> dict:
    return {
        "name": name,
        "kind": kind,
        "metrics": {"exact_match": {"value": value, "low": value - 0.05, "high": value + 0.05}},
        "cost": {"per_1000_requests": per_1000, "training_one_off": training},
        "significance": extra.get("significance"),
    }


LADDER = [
    rung("zero-shot", "prompting", 0.10, 0.01),
    rung("few-shot", "prompting", 0.82, 0.05),  # meets 0.8, but 5x the prompt tokens
    rung("lora", "fine-tuned", 0.89, 0.01, training=3.0),
]


def test_cheapest_rung_meeting_the_bar_counts_training_over_the_volume() -> None:
    target = {"metric": "exact_match", "min": 0.8}
    # 1M requests: few-shot $50, lora $10 + $3 training -> lora
    chosen = cost.recommend(LADDER, "exact_match", target, "few-shot", 1_000_000)
    assert chosen["rung"] == "lora" and chosen["met_target"] is True
    assert "$13.00 for 1,000,000 requests incl. $3.00 of training" in chosen["reason"]
    assert "also meeting the bar but costlier: few-shot" in chosen["reason"]
    assert "below the bar: zero-shot 0.100" in chosen["reason"]
    # 10k requests: few-shot $0.50, lora $0.10 + $3 -> few-shot is cheaper
    assert cost.recommend(LADDER, "exact_match", target, "few-shot", 10_000)["rung"] == "few-shot"


def test_no_rung_meets_the_bar() -> None:
    chosen = cost.recommend(LADDER, "exact_match", {"metric": "exact_match", "min": 0.95}, "few-shot", 1000)
    assert chosen["rung"] is None and chosen["met_target"] is False
    assert "the best is lora at 0.890" in chosen["reason"]


def test_without_a_bar_an_insignificant_fine_tune_loses_to_prompting() -> None:
    unclear = {"delta": 0.07, "p_value": 0.2, "significant": False}
    ladder = [*LADDER[:2], rung("lora", "fine-tuned", 0.89, 0.01, 3.0, significance=unclear)]
    chosen = cost.recommend(ladder, "exact_match", None, "few-shot", 1_000_000)
    assert chosen["rung"] == "few-shot"
    assert "not significantly better than few-shot (p = 0.200)" in chosen["reason"]
    clear = {"delta": 0.07, "p_value": 0.001, "significant": True}
    ladder[2] = rung("lora", "fine-tuned", 0.89, 0.01, 3.0, significance=clear)
    assert cost.recommend(ladder, "exact_match", None, "few-shot", 1_000_000)["rung"] == "lora"


def test_the_verdict_calls_out_forgetting() -> None:
    forgot = rung("lora", "fine-tuned", 0.89, 0.01, training=3.0)
    forgot["general"] = {"probe_accuracy": 0.21, "delta_probe_accuracy": -0.25, "delta_perplexity": 3.6}
    chosen = cost.recommend(
        [*LADDER[:2], forgot], "exact_match", {"metric": "exact_match", "min": 0.8}, "", 10**6
    )
    assert chosen["rung"] == "lora"
    assert "probe accuracy fell from 0.46 to 0.21 (perplexity +3.6): it forgot" in chosen["reason"]
    kept = rung("lora", "fine-tuned", 0.89, 0.01, training=3.0)
    kept["general"] = {"probe_accuracy": 0.45, "delta_probe_accuracy": -0.01, "delta_perplexity": 0.1}
    assert "forgot" not in cost.recommend([kept], "exact_match", None, "lora", 10**6)["reason"]
