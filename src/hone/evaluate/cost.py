"""Latency, cost per request and the recommendation: pure functions over measured numbers.

Self-hosted cost follows from measured throughput: a machine billed `hourly_price` per hour that
answers `requests_per_second` costs hourly_price / 3600 / requests_per_second per request. A hosted
API costs its per-token prices times the tokens each request used. Fine-tuned rungs add a one-off
training cost (training wall time x the training machine's hourly price), which the recommendation
spreads over the number of requests the user expects (`evaluate.cost.requests`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def latency(seconds: Sequence[float], total_seconds: float, batch_size: int) -> dict[str, float]:
    """p50/p95 of what each request waited, and throughput over the whole run."""
    values = np.asarray(seconds, dtype=float)
    return {
        "p50_seconds": round(float(np.percentile(values, 50)), 4) if len(values) else 0.0,
        "p95_seconds": round(float(np.percentile(values, 95)), 4) if len(values) else 0.0,
        "requests_per_second": round(len(values) / total_seconds, 4) if total_seconds > 0 else 0.0,
        "batch_size": batch_size,
    }


def self_hosted_per_1000(requests_per_second: float, hourly_price: float) -> float:
    """USD per 1,000 requests on a machine billed by the hour, at the measured throughput."""
    if requests_per_second <= 0:
        return float("inf")
    return hourly_price / 3600 / requests_per_second * 1000


def api_per_1000(
    prompt_tokens: float, completion_tokens: float, input_price: float, output_price: float
) -> float:
    """USD per 1,000 requests at per-million-token prices, from mean tokens per request."""
    return (prompt_tokens * input_price + completion_tokens * output_price) / 1_000_000 * 1000


def training_cost(train_seconds: float, hourly_price: float) -> float:
    return train_seconds / 3600 * hourly_price


def total_cost(rung: dict[str, Any], requests: int) -> float:
    """What the rung costs over `requests` requests, one-off training included."""
    cost = rung["cost"]
    return cost["per_1000_requests"] * requests / 1000 + cost["training_one_off"]


def recommend(
    rungs: list[dict[str, Any]],
    metric: str,
    target: dict[str, Any] | None,
    baseline: str,
    requests: int,
) -> dict[str, Any]:
    """The cheapest rung that meets the bar (total cost over `requests`), with the reason in words.

    Without a bar: the best rung on the metric, unless it is a fine-tuned rung that is not significantly
    better than the best prompting rung, in which case the prompting rung wins (no training, no model to
    look after).
    """
    scored = [(rung, rung["metrics"][metric]["value"]) for rung in rungs]
    if target is None:
        return recommend_without_bar(scored, metric, baseline, requests)
    bar = target["min"]
    meeting = [(rung, value) for rung, value in scored if value >= bar]
    if not meeting:
        best, value = max(scored, key=lambda item: item[1])
        return {
            "rung": None,
            "met_target": False,
            "reason": (
                f"no rung reaches {metric} >= {bar:g}; the best is {best['name']} at {value:.3f} "
                f"({interval(best, metric)}). Add data, train longer or try a larger model."
            ),
        }
    chosen, value = min(meeting, key=lambda item: (total_cost(item[0], requests), -item[1]))
    others = [r["name"] for r, _ in meeting if r is not chosen]
    short = [f"{r['name']} {v:.3f}" for r, v in scored if v < bar]
    reason = (
        f"cheapest rung with {metric} >= {bar:g}: {value:.3f} ({interval(chosen, metric)}), "
        f"${total_cost(chosen, requests):,.2f} for {requests:,} requests{training_note(chosen)}"
    )
    if others:
        reason += f"; also meeting the bar but costlier: {', '.join(others)}"
    if short:
        reason += f"; below the bar: {', '.join(short)}"
    return {"rung": chosen["name"], "met_target": True, "reason": reason + forgetting_note(chosen)}


def recommend_without_bar(
    scored: list[tuple[dict[str, Any], float]], metric: str, baseline: str, requests: int
) -> dict[str, Any]:
    best, value = max(scored, key=lambda item: (item[1], -total_cost(item[0], requests)))
    significance = best.get("significance")
    if best["kind"] == "fine-tuned" and significance and not significance["significant"]:
        base = next(rung for rung, _ in scored if rung["name"] == baseline)
        return {
            "rung": baseline,
            "met_target": None,
            "reason": (
                f"no target set; {best['name']} scores highest on {metric} ({value:.3f}) but is not "
                f"significantly better than {baseline} (p = {significance['p_value']:.3f}), which needs no "
                f"training: ${total_cost(base, requests):,.2f} vs ${total_cost(best, requests):,.2f} "
                f"for {requests:,} requests"
            ),
        }
    detail = (
        f", significantly better than {baseline} (p = {significance['p_value']:.3f})"
        if significance and significance["significant"]
        else ""
    )
    return {
        "rung": best["name"],
        "met_target": None,
        "reason": (
            f"no target set; the best rung on {metric}: {value:.3f} ({interval(best, metric)}){detail}, "
            f"${total_cost(best, requests):,.2f} for {requests:,} requests{training_note(best)}"
            f"{forgetting_note(best)}"
        ),
    }


FORGETTING = 0.05  # a drop in general probe accuracy larger than this is called out


def forgetting_note(rung: dict[str, Any]) -> str:
    """A warning when the chosen rung lost general capability: the task bar alone does not see it."""
    general = rung.get("general")
    if not general or general["delta_probe_accuracy"] > -FORGETTING:
        return ""
    before = general["probe_accuracy"] - general["delta_probe_accuracy"]
    return (
        f". Note: its general-capability probe accuracy fell from {before:.2f} to "
        f"{general['probe_accuracy']:.2f} (perplexity {general['delta_perplexity']:+.1f}): it forgot; "
        "if it must stay a general assistant, lower the learning rate or rank, or mix general data in"
    )


def interval(rung: dict[str, Any], metric: str) -> str:
    scores = rung["metrics"][metric]
    return f"95% CI {scores['low']:.3f}-{scores['high']:.3f}"


def training_note(rung: dict[str, Any]) -> str:
    one_off = rung["cost"]["training_one_off"]
    return f" incl. ${one_off:,.2f} of training" if one_off else ""
