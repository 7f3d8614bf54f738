"""Progress off a terminal: plain lines at the configured step and time intervals, timed by a fake clock."""

from __future__ import annotations

import io

from rich.console import Console

from hone.progress import StepProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def piped() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=80), buffer


def run_steps(progress: StepProgress, clock: FakeClock, steps: int, seconds_per_step: float) -> None:
    with progress:
        for step in range(1, steps + 1):
            clock.now = step * seconds_per_step
            progress.update(completed=step, loss=f"{1 / step:.2f}")


def test_off_a_terminal_a_plain_line_every_n_steps_with_the_bars_figures() -> None:
    console, buffer = piped()
    clock = FakeClock()
    progress = StepProgress(
        console,
        "job",
        10,
        unit="steps",
        template="loss {loss}",
        fields={"loss": "-"},
        every_steps=3,
        clock=clock,
    )
    run_steps(progress, clock, 10, seconds_per_step=2.0)
    assert buffer.getvalue().splitlines() == [
        "job: 3/10 steps (30%)  loss 0.33  elapsed 0:00:06  ETA 0:00:14",
        "job: 6/10 steps (60%)  loss 0.17  elapsed 0:00:12  ETA 0:00:08",
        "job: 9/10 steps (90%)  loss 0.11  elapsed 0:00:18  ETA 0:00:02",
        "job: 10/10 steps (100%)  loss 0.10  elapsed 0:00:20  ETA 0:00:00",
    ]
    assert "\x1b" not in buffer.getvalue()


def test_a_line_every_n_seconds_when_that_comes_first() -> None:
    console, buffer = piped()
    clock = FakeClock()
    # 100 steps: a line every 10 steps by default, or every 30 s; a step takes 20 s.
    progress = StepProgress(console, "job", 100, every_seconds=30.0, clock=clock)
    run_steps(progress, clock, 10, seconds_per_step=20.0)
    assert [line.split()[1] for line in buffer.getvalue().splitlines()] == [
        "2/100",
        "4/100",
        "6/100",
        "8/100",
        "10/100",
    ]


def test_default_interval_is_a_tenth_of_the_steps() -> None:
    console, buffer = piped()
    clock = FakeClock()
    with StepProgress(console, "answers", 20, clock=clock) as progress:
        for _ in range(20):
            progress.advance()
    printed = [line.split()[1] for line in buffer.getvalue().splitlines()]
    assert printed == [f"{n}/20" for n in range(2, 21, 2)]


def test_stopping_early_prints_the_last_figures_once() -> None:
    console, buffer = piped()
    clock = FakeClock()
    progress = StepProgress(console, "job", 10, unit="steps", every_steps=3, clock=clock)
    with progress:
        for step in range(1, 6):
            progress.update(completed=step)
    assert [line.split()[1] for line in buffer.getvalue().splitlines()] == ["3/10", "5/10"]


def test_a_resumed_run_estimates_from_the_steps_done_since_it_started() -> None:
    console, buffer = piped()
    clock = FakeClock()
    progress = StepProgress(console, "job", 100, every_steps=10, clock=clock).start(50)
    clock.now = 100.0
    progress.update(completed=60)
    assert buffer.getvalue().splitlines() == ["job: 60/100 (60%)  elapsed 0:01:40  ETA 0:06:40"]


def test_a_line_waits_for_a_flush_to_carry_fresh_figures() -> None:
    console, buffer = piped()
    clock = FakeClock()
    progress = StepProgress(
        console, "job", 4, template="loss {loss}", fields={"loss": "-"}, every_steps=2, clock=clock
    ).start()
    progress.update(completed=2, flush=False)
    assert buffer.getvalue() == ""
    progress.update(completed=2, loss="0.50")
    assert buffer.getvalue().splitlines() == ["job: 2/4 (50%)  loss 0.50  elapsed 0:00:00  ETA -:--:--"]


def test_on_a_terminal_the_bar_is_drawn_and_no_plain_lines_are_printed() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    clock = FakeClock()
    progress = StepProgress(
        console,
        "job",
        10,
        unit="steps",
        template="loss {loss}",
        fields={"loss": "-"},
        every_steps=3,
        clock=clock,
    )
    run_steps(progress, clock, 10, seconds_per_step=2.0)
    drawn = buffer.getvalue()
    assert "10/10 steps" in drawn and "loss 0.10" in drawn  # the live bar, as before
    assert "\x1b[" in drawn
    assert "elapsed" not in drawn and "(30%)" not in drawn
