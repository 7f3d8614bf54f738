"""The terminal view of a data check: a table per split, then every error and warning."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hone.data.check import DataReport

SHOWN = 40


def split_table(report: DataReport) -> Table:
    table = Table(title="Data check")
    columns = (
        "split",
        "format",
        "examples",
        "errors",
        "warnings",
        "tokens min/med/p95/max",
        "total",
        "trunc.",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("split", "format") else "right")
    for split in report.splits:
        lengths = split.token_lengths
        spread = (
            "/".join(f"{lengths.get(k, 0):.0f}" for k in ("min", "median", "p95", "max")) if lengths else "-"
        )
        table.add_row(
            split.name,
            split.format or "-",
            str(split.examples),
            str(len(split.errors)),
            str(len(split.warnings)),
            spread,
            f"{lengths.get('total', 0):,.0f}",
            f"{split.truncation_rate:.1%}",
        )
    return table


def print_problems(console: Console, label: str, style: str, problems: list[str]) -> None:
    for problem in problems[:SHOWN]:
        console.print(Text.assemble((f"{label}: ", style), problem), soft_wrap=True, highlight=False)
    if len(problems) > SHOWN:
        console.print(f"... and {len(problems) - SHOWN} more {label}s (all of them with --json)")


def print_report(report: DataReport, console: Console) -> None:
    console.print(split_table(report))
    errors = report.errors + [e for split in report.splits for e in split.errors]
    warnings = report.warnings + [w for split in report.splits for w in split.warnings]
    print_problems(console, "error", "bold red", errors)
    print_problems(console, "warning", "yellow", warnings)
    if report.estimate:
        estimate = report.estimate
        console.print(
            f"[bold]Estimate[/]: {estimate['training_tokens']:,} training tokens "
            f"({estimate['epochs']:g} epochs) "
            f"at ~{estimate['tokens_per_second']:.0f} tokens/s = {estimate['seconds'] / 60:.1f} min, "
            f"${estimate['cost']:.2f} at ${estimate['price_per_hour']:.2f}/h  [dim]({estimate['basis']})[/]"
        )
    verdict = "[bold red]errors found[/]: fix them before training" if errors else "[bold green]ok[/]"
    console.print(f"{verdict} ({len(errors)} errors, {len(warnings)} warnings)")
