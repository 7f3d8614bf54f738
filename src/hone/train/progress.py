"""Training progress: step, loss, eval loss, trained tokens/s and ETA, as a live bar or plain lines.

transformers' own tqdm bar shows neither tokens/s nor eval loss, and its printer callback dumps raw
dicts; this callback replaces both and also records the loss history for the run folder. Off a
terminal (CI logs, a pipe) the same figures come as plain lines (hone.progress).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from transformers import TrainerCallback

from hone.progress import EVERY_SECONDS, StepProgress


class RichProgress(TrainerCallback):
    def __init__(
        self,
        console: Console,
        description: str = "training",
        every_steps: int | None = None,
        every_seconds: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.console = console
        self.description = description
        self.every_steps = every_steps  # None: every 10% of the steps
        self.every_seconds = every_seconds
        self.clock = clock  # times training, tokens/s and the plain lines; injectable for tests
        self.history: list[dict[str, Any]] = []
        self.progress: StepProgress | None = None
        self.started = 0.0
        self.eval_seconds = 0.0  # excluded from tokens/s: evaluation trains on nothing
        self.fields = {"loss": "-", "eval": "-", "tps": "-"}
        self.train_seconds = 0.0  # wall time of this process's training, validation excluded
        self.tokens_at_start = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = self.clock()
        # Resumed from a checkpoint: the Trainer restored the log of the steps before it.
        self.history = [dict(record) for record in state.log_history]
        self.tokens_at_start = getattr(state, "num_input_tokens_seen", 0) or 0
        if not state.is_world_process_zero:
            return
        self.progress = StepProgress(
            self.console,
            self.description,
            state.max_steps,
            unit="steps",
            template="loss {loss}  eval {eval}  {tps} tok/s",
            fields=self.fields,
            eta=True,
            every_steps=self.every_steps,
            every_seconds=self.every_seconds,
            clock=self.clock,
        ).start(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            # The Trainer logs (and evaluates) right after this: a plain line then carries those figures.
            logging_next = control.should_log or control.should_evaluate
            self.progress.update(completed=state.global_step, flush=not logging_next)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        self.eval_seconds += float(logs.get("eval_runtime", 0.0))
        elapsed = self.clock() - self.started - self.eval_seconds
        record["train_seconds"] = round(elapsed, 3)  # since this process began training, validation excluded
        tokens = (getattr(state, "num_input_tokens_seen", 0) or 0) - self.tokens_at_start
        if tokens and elapsed > 0:
            record["tokens_per_second"] = round(tokens / elapsed, 1)
            self.fields["tps"] = f"{record['tokens_per_second']:.0f}"
        if "loss" in logs:
            self.fields["loss"] = f"{logs['loss']:.4f}"
        if "eval_loss" in logs:
            self.fields["eval"] = f"{logs['eval_loss']:.4f}"
        self.history.append(record)
        if self.progress is not None:
            evaluated = any(key.startswith("eval_") for key in logs)
            evaluating_next = control.should_evaluate and not evaluated
            self.progress.update(completed=state.global_step, flush=not evaluating_next, **self.fields)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.train_seconds = self.clock() - self.started - self.eval_seconds
        if self.progress is not None:
            self.progress.update(completed=state.global_step, **self.fields)
        self.close()

    def close(self) -> None:
        """Stop the bar: at the end of training, and when training raises (or a terminal stays live-drawn)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
