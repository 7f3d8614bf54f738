"""The ladder in the terminal: one table of rungs, one of every metric, and the recommendation."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hone.contract import GeneralFigures, Interval, Ladder, Significance


def rung_table(ladder: Ladder) -> Table:
    metric = ladder.primary_metric
    title = f"The ladder on {ladder.task.examples} test examples ({metric}"
    title += f", bar {ladder.target.min:g})" if ladder.target else ")"
    table = Table(title=title)
    table.add_column("rung", no_wrap=True)
    for column in (f"{metric} [95% CI]", f"vs {ladder.baseline}", "general", "p50/p95 s"):
        table.add_column(column, justify="right")
    for column in ("prompt tok", "$ / 1k req", "training $"):
        table.add_column(column, justify="right")
    for rung in ladder.rungs:
        table.add_row(
            rung.name,
            with_interval(rung.metrics[metric]),
            versus(rung.significance),
            general_change(rung.general),
            f"{rung.latency.p50_seconds:.1f}/{rung.latency.p95_seconds:.1f}",
            f"{rung.tokens.prompt_mean:.0f}",
            money(rung.cost.per_1000_requests),
            money(rung.cost.training_one_off) if rung.cost.training_one_off else "-",
        )
    return table


def metric_table(ladder: Ladder) -> Table:
    table = Table(title="Every task metric (95% bootstrap interval)")
    table.add_column("metric")
    for rung in ladder.rungs:
        table.add_column(rung.name, justify="right")
    names = list(ladder.rungs[0].metrics) if ladder.rungs else []
    for name in names:
        table.add_row(name, *(with_interval(rung.metrics[name]) for rung in ladder.rungs))
    return table


def with_interval(scores: Interval) -> str:
    return f"{scores.value:.3f} [{scores.low:.2f}, {scores.high:.2f}]"


def versus(significance: Significance | None) -> str:
    if not significance:
        return "baseline"
    marker = " *" if significance.significant else ""
    shown = "p≤0.001" if significance.p_value <= 0.001 else f"p={significance.p_value:.3f}"
    return f"{significance.delta:+.3f} {shown}{marker}"


def general_change(general: GeneralFigures | None) -> str:
    if not general:
        return "-"
    return f"{general.probe_accuracy:.2f} ({general.delta_probe_accuracy:+.2f})"


def money(value: float) -> str:
    if value == float("inf"):
        return "-"
    return f"{value:.4f}" if value < 1 else f"{value:,.2f}"


def show_ladder(ladder: Ladder, console: Console) -> None:
    console.print(rung_table(ladder))
    console.print(metric_table(ladder))
    choice = ladder.recommendation.rung or "none"
    console.print(f"[bold]Recommendation:[/] {choice}: {ladder.recommendation.reason}")
    console.print("[dim]* significant at the 5% level (paired bootstrap)[/]")
