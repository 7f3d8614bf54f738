"""`hone monitor`: one window of the request log, judged; the figures as tables or JSON, and as a
Prometheus text file for a node exporter's textfile collector."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hone.config import ServeFile
from hone.errors import HoneError
from hone.operate.report import (
    Breach,
    CanaryComparison,
    VersionReport,
    breaches,
    canary_comparisons,
    last_user_turn,
    version_reports,
    window_seconds,
)
from hone.serve.checks import OnlineChecks
from hone.serve.log import RequestLog

MIN_DRIFT_ROWS = 20  # recent prompts before drift is tested: fewer say little about a distribution


@dataclass
class Monitoring:
    since: str
    began: float
    reports: list[VersionReport]
    breaches: list[Breach]
    canaries: list[CanaryComparison]
    drift: Any = None  # hone.operate.drift.Drift, or None
    drift_note: str | None = None  # why drift was not measured
    outlier_prompts: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "from": self.began,
            "versions": [report.to_dict() for report in self.reports],
            "breaches": [str(breach) for breach in self.breaches],
            "canaries": [comparison.to_dict() for comparison in self.canaries],
            "drift": self.drift.to_dict() if self.drift is not None else None,
            "drift_note": self.drift_note,
            "outlier_prompts": [
                {"prompt": text, "distance": distance} for text, distance in self.outlier_prompts
            ],
        }


def monitor(settings: ServeFile, since: str | None = None, now: float | None = None) -> Monitoring:
    window = since or settings.monitor.since
    began = (time.time() if now is None else now) - window_seconds(window)
    log = RequestLog(settings.serve.request_log, settings.serve.redact_pii)
    try:
        requests, feedback = log.rows(since=began), log.feedback(since=began)
    finally:
        log.close()
    checks = OnlineChecks.from_config(settings.monitor)
    reports = version_reports(requests, feedback, checks)
    found = breaches(reports, settings.monitor.thresholds, settings.monitor.min_requests)
    result = Monitoring(
        window, began, reports, found, canary_comparisons(reports, settings.monitor.min_requests)
    )
    measure_input_drift(settings, [last_user_turn(row["request"]) for row in requests], result)
    return result


def measure_input_drift(settings: ServeFile, prompts: list[str], result: Monitoring) -> None:
    """Recent prompts against the training split's, in the ladder's embedding space; a breach when more of
    them than `drift_share` lie outside the split and a test says so at `drift_p_value` (the MMD test for a
    shift of the whole distribution, the binomial one for a new topic the MMD can miss)."""
    from hone.data.load import load_split
    from hone.operate.drift import embed_prompts, measure_drift

    split = settings.monitor.train_split
    if split is None:
        result.drift_note = "set monitor.train_split to compare recent prompts with the training split"
        return
    if len(prompts) < MIN_DRIFT_ROWS:
        result.drift_note = f"{len(prompts)} prompts in the window; drift is measured from {MIN_DRIFT_ROWS}"
        return
    if not split.is_file() and not split.is_dir():
        raise HoneError(f"{split}: training split not found (monitor.train_split)")
    reference = [last_user_turn_of(example.messages) for example in load_split(split)]
    drift = measure_drift(embed_prompts(reference), embed_prompts(prompts))
    result.drift = drift
    result.outlier_prompts = [(prompts[index], distance) for index, distance in drift.outliers]
    limits = settings.monitor.thresholds
    if (
        limits.drift_p_value is not None
        and limits.drift_share is not None
        and drift.ood_share > limits.drift_share
        and min(drift.mmd_p_value, drift.ood_p_value) < limits.drift_p_value
    ):
        result.breaches.append(Breach("*", "*", "drift_share", drift.ood_share, limits.drift_share))


def last_user_turn_of(messages: list[dict[str, Any]]) -> str:
    users = [message["content"] for message in messages if message["role"] == "user"]
    return users[-1] if users else ""


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def print_monitoring(result: Monitoring, console: Console) -> None:
    if not result.reports:
        console.print(f"No requests in the last {result.since}.")
    else:
        table = Table(title=f"Served in the last {result.since}")
        for column in ("route", "version", "requests", "errors", "p50 s", "p95 s", "tokens out", "rated",
                       "mean rating", "checks"):  # fmt: skip
            table.add_column(column, justify="left" if column in ("route", "version", "checks") else "right")
        for report in result.reports:
            checks = ", ".join(f"{name} {number(rate.value)}" for name, rate in report.checks.items())
            table.add_row(
                report.route,
                report.version,
                str(report.requests),
                str(report.errors),
                number(report.latency(0.5)),
                number(report.latency(0.95)),
                str(report.completion_tokens),
                str(len(report.scores)),
                number(report.mean_rating),
                checks or "-",
            )
        console.print(table)
    for comparison in result.canaries:
        console.print(
            f"[bold]canary[/] {comparison.route}: {comparison.candidate} "
            f"({comparison.candidate_requests} requests) vs {comparison.production} "
            f"({comparison.production_requests}): [bold]{comparison.recommendation}[/] - {comparison.reason}"
        )
        for d in comparison.differences:
            console.print(
                f"    {d.figure}: {number(d.candidate)} vs {number(d.production)}, "
                f"difference 95% [{d.low:+.3f}, {d.high:+.3f}]"
            )
    if result.drift is not None:
        drift = result.drift
        console.print(
            f"[bold]input drift[/]: MMD p={drift.mmd_p_value:.3g}; {drift.ood_share:.1%} of "
            f"{drift.recent_rows} prompts lie farther from the training split than its own "
            f"{drift.quantile:.0%} (expected {drift.ood_expected_share:.0%}, p={drift.ood_p_value:.3g})"
        )
        for text, distance in result.outlier_prompts[:5]:
            console.print(f"    {distance:.3f}  {text[:100]!r}", markup=False, highlight=False)
    elif result.drift_note:
        console.print(f"input drift: not measured ({result.drift_note})")
    for breach in result.breaches:
        console.print(f"[red]breach[/] {breach}")


def prometheus_text(result: Monitoring) -> str:
    """The figures as Prometheus text exposition (for node_exporter's textfile collector)."""
    lines = []

    def gauge(name: str, help_text: str, rows: list[tuple[dict[str, str], float | None]]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} gauge"])
        for labels, value in rows:
            if value is not None:
                text = ",".join(f'{key}="{escape(val)}"' for key, val in labels.items())
                lines.append(f"{name}{{{text}}} {value:.6g}" if text else f"{name} {value:.6g}")

    def by_version(value: Any) -> list[tuple[dict[str, str], float | None]]:
        return [({"route": r.route, "version": r.version}, value(r)) for r in result.reports]

    gauge("hone_monitor_requests", "Requests in the window.", by_version(lambda r: r.requests))
    gauge("hone_monitor_error_rate", "Failed requests, as a share.", by_version(lambda r: r.error_rate.value))
    gauge("hone_monitor_p50_latency_seconds", "Median latency.", by_version(lambda r: r.latency(0.5)))
    gauge(
        "hone_monitor_p95_latency_seconds", "95th-percentile latency.", by_version(lambda r: r.latency(0.95))
    )
    gauge("hone_monitor_feedback_rate", "Answers rated, as a share.", by_version(lambda r: r.feedback_rate))
    gauge("hone_monitor_mean_rating", "Mean feedback score (0-1).", by_version(lambda r: r.mean_rating))
    gauge(
        "hone_monitor_check_pass_rate",
        "Answers passing each online check, as a share.",
        [
            ({"route": r.route, "version": r.version, "check": name}, rate.value)
            for r in result.reports
            for name, rate in r.checks.items()
        ],
    )
    if result.drift is not None:
        gauge(
            "hone_monitor_drift_p_value",
            "Input drift: MMD two-sample p-value.",
            [({}, result.drift.mmd_p_value)],
        )
        gauge(
            "hone_monitor_drift_ood_share",
            "Input drift: share of prompts outside the training split's 95th percentile.",
            [({}, result.drift.ood_share)],
        )
    gauge("hone_monitor_breaches", "Thresholds breached.", [({}, float(len(result.breaches)))])
    return "\n".join(lines) + "\n"


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_prometheus(result: Monitoring, path: Path) -> None:
    from hone.io import atomic_write_text

    atomic_write_text(path, prometheus_text(result))
