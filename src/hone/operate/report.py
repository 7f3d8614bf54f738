"""What the request log says about each served version: traffic, errors, latency, tokens, feedback and the
online task checks, per route and version, judged against `monitor.thresholds`; and, for a route served by
more than one version (a canary), each newcomer against the version that served most of the route.

The canary rule is a non-inferiority test: a candidate is recommended for promotion only when, on every
quality figure with data (error rate, each online check, mean rating), the 95% interval of its difference
from production rules out a loss larger than `CANARY_MARGIN`; it is rolled back when an interval shows it
is worse; otherwise the recommendation is to keep waiting for more traffic.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hone.errors import HoneError
from hone.serve.checks import OnlineChecks

CANARY_MARGIN = 0.05  # the largest loss on a rate or a mean rating (0-1) a promotion may carry
Z95 = 1.959963984540054
MIN_RATED = 5  # ratings before a version's mean rating is judged against its threshold
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def window_seconds(text: str) -> float:
    """`30m`, `24h`, `7d`: the length of a monitoring window in seconds."""
    matched = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([smhdw])", text.strip())
    if matched is None:
        raise HoneError(f"--since {text!r}: expected a number and a unit, such as 30m, 24h or 7d")
    return float(matched.group(1)) * UNITS[matched.group(2)]


@dataclass
class Rate:
    """Passed out of total, with a Wilson 95% interval (sound near 0 and 1, where checks live)."""

    passed: int
    total: int

    @property
    def value(self) -> float | None:
        return self.passed / self.total if self.total else None

    def interval(self) -> tuple[float, float]:
        if not self.total:
            return (0.0, 1.0)
        p, n = self.passed / self.total, self.total
        centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
        half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
        return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class VersionReport:
    route: str  # what the requests asked for: a route, an alias, a version, a run folder, base
    version: str  # what answered
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    answered: set[str] = field(default_factory=set, repr=False)  # response ids, to match feedback
    rated: set[str] = field(default_factory=set, repr=False)
    scores: list[float] = field(default_factory=list, repr=False)
    checks: dict[str, Rate] = field(default_factory=dict)

    @property
    def error_rate(self) -> Rate:
        return Rate(self.errors, self.requests)

    def latency(self, quantile: float) -> float | None:
        return float(np.quantile(self.latencies, quantile)) if self.latencies else None

    @property
    def mean_rating(self) -> float | None:
        return float(np.mean(self.scores)) if self.scores else None

    @property
    def feedback_rate(self) -> float | None:
        return len(self.rated) / self.requests if self.requests else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate.value,
            "p50_latency_seconds": self.latency(0.5),
            "p95_latency_seconds": self.latency(0.95),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "feedback": len(self.scores),
            "feedback_rate": self.feedback_rate,
            "mean_rating": self.mean_rating,
            "checks": {
                name: {"passed": r.passed, "total": r.total, "rate": r.value}
                for name, r in self.checks.items()
            },
        }


def version_reports(
    requests: list[dict[str, Any]], feedback: list[dict[str, Any]], checks: OnlineChecks
) -> list[VersionReport]:
    """One report per (route, version) that answered in the window, the busiest first."""
    reports: dict[tuple[str, str], VersionReport] = {}
    for row in requests:
        version = row["version"] or "-"
        report = reports.setdefault((row["requested"], version), VersionReport(row["requested"], version))
        report.requests += 1
        report.answered.add(row["id"])
        if row["status"] != 200:
            report.errors += 1
            continue
        report.latencies.append(row["latency_seconds"] or 0.0)
        report.prompt_tokens += row["prompt_tokens"] or 0
        report.completion_tokens += row["completion_tokens"] or 0
        for name, passed in checks(row["response"] or "").items():
            rate = report.checks.setdefault(name, Rate(0, 0))
            rate.passed, rate.total = rate.passed + int(passed), rate.total + 1
    owner = {response: report for report in reports.values() for response in report.answered}
    for rating in feedback:
        report = owner.get(rating["response_id"])
        if report is not None:
            report.rated.add(rating["response_id"])
            report.scores.append(rating["score"])
    return sorted(reports.values(), key=lambda r: (r.route, -r.requests, r.version))


@dataclass
class Breach:
    route: str
    version: str
    figure: str
    value: float
    limit: float

    def __str__(self) -> str:
        where = f"{self.route} -> {self.version}"
        return f"{where}: {self.figure} {self.value:.3g} is past its limit {self.limit:.3g}"


def breaches(reports: list[VersionReport], thresholds: Any, min_requests: int) -> list[Breach]:
    """Every threshold a version with enough traffic is past (fewer than min_requests: not judged)."""
    found = []
    for report in reports:
        if report.requests < min_requests:
            continue
        figures: list[tuple[str, float | None, float | None, bool]] = [  # name, value, limit, higher is worse
            ("error_rate", report.error_rate.value, thresholds.error_rate, True),
            ("p95_latency_seconds", report.latency(0.95), thresholds.p95_latency_seconds, True),
            *((name, rate.value, getattr(thresholds, name), False) for name, rate in report.checks.items()),
        ]
        if len(report.scores) >= MIN_RATED:
            figures.append(("mean_rating", report.mean_rating, thresholds.mean_rating, False))
        for name, value, limit, higher_is_worse in figures:
            if (
                value is not None
                and limit is not None
                and (value > limit if higher_is_worse else value < limit)
            ):
                found.append(Breach(report.route, report.version, name, value, limit))
    return found


@dataclass
class Difference:
    figure: str
    candidate: float | None
    production: float | None
    low: float  # the 95% interval of candidate - production, in the direction where higher is better
    high: float


@dataclass
class CanaryComparison:
    route: str
    candidate: str
    production: str
    candidate_requests: int
    production_requests: int
    differences: list[Difference]
    recommendation: str  # promote, wait, roll back
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rate_difference(candidate: Rate, production: Rate) -> tuple[float, float]:
    """Newcombe's interval for the difference of two proportions, from their Wilson intervals."""
    p1, p2 = candidate.value or 0.0, production.value or 0.0
    l1, u1 = candidate.interval()
    l2, u2 = production.interval()
    difference = p1 - p2
    return (
        difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def mean_difference(candidate: list[float], production: list[float]) -> tuple[float, float]:
    """Welch's normal interval for the difference of two means."""
    difference = float(np.mean(candidate) - np.mean(production))
    spread = math.sqrt(
        np.var(candidate, ddof=1) / len(candidate) + np.var(production, ddof=1) / len(production)
    )
    return (difference - Z95 * spread, difference + Z95 * spread)


def compare(candidate: VersionReport, production: VersionReport, min_requests: int) -> CanaryComparison:
    differences = []
    ok_c, ok_p = (
        Rate(candidate.requests - candidate.errors, candidate.requests),
        Rate(production.requests - production.errors, production.requests),
    )
    differences.append(Difference("success_rate", ok_c.value, ok_p.value, *rate_difference(ok_c, ok_p)))
    for name in sorted(set(candidate.checks) & set(production.checks)):
        mine, theirs = candidate.checks[name], production.checks[name]
        differences.append(Difference(name, mine.value, theirs.value, *rate_difference(mine, theirs)))
    if len(candidate.scores) >= 2 and len(production.scores) >= 2:
        differences.append(
            Difference(
                "mean_rating",
                candidate.mean_rating,
                production.mean_rating,
                *mean_difference(candidate.scores, production.scores),
            )
        )
    worse = [d.figure for d in differences if d.high < 0]
    unsure = [d.figure for d in differences if d.low < -CANARY_MARGIN]
    if worse:
        recommendation, reason = (
            "roll back",
            f"worse than production on {', '.join(worse)} (95% interval below 0)",
        )
    elif candidate.requests < min_requests:
        recommendation, reason = (
            "wait",
            f"{candidate.requests} of the {min_requests} requests needed to judge",
        )
    elif unsure:
        recommendation = "wait"
        reason = f"a loss over {CANARY_MARGIN:g} is not ruled out yet on {', '.join(unsure)}"
    else:
        recommendation = "promote"
        reason = (
            f"no loss over {CANARY_MARGIN:g} on {', '.join(d.figure for d in differences)} (95% intervals)"
        )
    return CanaryComparison(
        candidate.route,
        candidate.version,
        production.version,
        candidate.requests,
        production.requests,
        differences,
        recommendation,
        reason,
    )


def canary_comparisons(reports: list[VersionReport], min_requests: int) -> list[CanaryComparison]:
    """For each route answered by several versions: each of the others against the busiest."""
    by_route: dict[str, list[VersionReport]] = defaultdict(list)
    for report in reports:
        by_route[report.route].append(report)
    comparisons = []
    for versions in by_route.values():
        production, *candidates = sorted(versions, key=lambda r: -r.requests)
        comparisons.extend(compare(candidate, production, min_requests) for candidate in candidates)
    return comparisons


def last_user_turn(request: str) -> str:
    """The text a drift check compares: the last user message of a chat, or a completion's prompt."""
    try:
        value = json.loads(request)
    except ValueError:
        return request
    if isinstance(value, list):
        users = [m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else ""
    return value if isinstance(value, str) else ""
