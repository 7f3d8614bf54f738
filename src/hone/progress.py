"""Progress that survives a log file: a live rich bar on a terminal, plain lines everywhere else.

rich draws its live bar only on a terminal; in CI logs or `make quickstart | tee log` it never
appears, and a long step looks hung. There the same figures are printed as one plain line each time
`every_steps` more steps are done or `every_seconds` have passed, whichever comes first. Lines are
printed as progress is reported (no timer thread), so a step that takes longer than `every_seconds`
prints once it ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

EVERY_FRACTION = 0.1  # a plain line every 10% of the steps ...
EVERY_SECONDS = 30.0  # ... or every 30 s, whichever comes first


def draws_live(console: Console) -> bool:
    """Whether rich animates a bar on this console (what `rich.live.Live.refresh` checks)."""
    return console.is_jupyter or (console.is_terminal and not console.is_dumb_terminal)


def clock_time(seconds: float | None) -> str:
    """H:MM:SS, as rich's elapsed and remaining columns write it."""
    if seconds is None:
        return "-:--:--"
    return str(timedelta(seconds=max(0, int(seconds))))


class FieldsColumn(ProgressColumn):
    """The caller's own figures (loss, tokens/s, ...), formatted from the task's fields."""

    def __init__(self, template: str) -> None:
        super().__init__()
        self.template = template

    def render(self, task: Task) -> Text:
        return Text(self.template.format(**task.fields))


class StepProgress:
    """One long loop's progress: `update` it as steps finish, `stop` it at the end (or use `with`).

    `unit` follows the step counts ("12/40 steps"); `template` formats `fields` (e.g. "loss {loss}"),
    shown in the bar and in each plain line; `eta` adds the time-remaining column to the bar (plain
    lines always carry an ETA). `clock` is injectable so tests need not wait.
    """

    def __init__(
        self,
        console: Console,
        description: str,
        total: int,
        *,
        unit: str = "",
        template: str = "",
        fields: dict[str, Any] | None = None,
        eta: bool = False,
        transient: bool = False,
        every_steps: int | None = None,
        every_seconds: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.console = console
        self.description = description
        self.total = total
        self.unit = unit
        self.template = template
        self.fields = dict(fields or {})
        self.eta = eta
        self.transient = transient
        self.every_steps = every_steps or max(1, math.ceil(total * EVERY_FRACTION))
        self.every_seconds = every_seconds
        self.clock = clock
        self.live = draws_live(console)
        self.bar: Progress | None = None
        self.task: Any = None
        self.completed = 0
        self.started_at = 0.0
        self.started_from = 0  # steps already done when it started (a resumed run)
        self.printed_step = 0
        self.printed_at = 0.0

    def columns(self) -> list[ProgressColumn]:
        steps = (
            TextColumn(f"{{task.completed}}/{{task.total}} {self.unit}")
            if self.unit
            else MofNCompleteColumn()
        )
        shown: list[ProgressColumn] = [TextColumn("[bold]{task.description}"), BarColumn(), steps]
        if self.template:
            shown.append(FieldsColumn(self.template))
        shown.append(TimeElapsedColumn())
        if self.eta:
            shown += [TextColumn("ETA"), TimeRemainingColumn()]
        return shown

    def start(self, completed: int = 0) -> StepProgress:
        self.completed = self.started_from = self.printed_step = completed
        self.started_at = self.printed_at = self.clock()
        if self.live:
            self.bar = Progress(*self.columns(), console=self.console, transient=self.transient)
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=self.total, **self.fields)
            self.bar.update(self.task, completed=completed)
        return self

    def update(
        self, completed: int | None = None, advance: int = 0, flush: bool = True, **fields: Any
    ) -> None:
        """Record progress; `flush=False` holds a due plain line until an update with fresher figures."""
        self.completed = (self.completed if completed is None else completed) + advance
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.completed, **self.fields)
        elif flush and self.due():
            self.print_line()

    def advance(self, steps: int = 1) -> None:
        self.update(advance=steps)

    def stop(self) -> None:
        """End the bar; off a terminal, print the last figures unless they are already printed."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.completed != self.printed_step:
            self.print_line()

    def due(self) -> bool:
        if self.completed == self.printed_step:
            return False
        return (
            self.completed >= self.total
            or self.completed // self.every_steps > self.printed_step // self.every_steps
            or self.clock() - self.printed_at >= self.every_seconds
        )

    def line(self) -> str:
        """The plain line: what the bar shows, in words."""
        now = self.clock()
        elapsed = now - self.started_at
        done = self.completed - self.started_from
        remaining = (self.total - self.completed) * elapsed / done if done > 0 and elapsed > 0 else None
        percent = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{self.description}: {self.completed}/{self.total}{unit}{percent}"]
        if self.template:
            parts.append(self.template.format(**self.fields))
        parts += [f"elapsed {clock_time(elapsed)}", f"ETA {clock_time(remaining)}"]
        return "  ".join(parts)

    def print_line(self) -> None:
        self.console.print(self.line(), markup=False, highlight=False, emoji=False, soft_wrap=True)
        self.printed_step = self.completed
        self.printed_at = self.clock()

    def __enter__(self) -> StepProgress:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
