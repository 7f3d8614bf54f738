"""A live progress bar for training: step, loss, eval loss, trained tokens/s and ETA.

transformers' own tqdm bar shows neither tokens/s nor eval loss, and its printer callback dumps raw
dicts; this callback replaces both and also records the loss history for the run folder.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback


class RichProgress(TrainerCallback):
    def __init__(self, console: Console, description: str = "training") -> None:
        self.console = console
        self.description = description
        self.history: list[dict[str, Any]] = []
        self.progress: Progress | None = None
        self.task: Any = None
        self.started = 0.0
        self.eval_seconds = 0.0  # excluded from tokens/s: evaluation trains on nothing
        self.fields = {"loss": "-", "eval": "-", "tps": "-"}
        self.train_seconds = 0.0  # wall time of this process's training, validation excluded
        self.tokens_at_start = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()
        # Resumed from a checkpoint: the Trainer restored the log of the steps before it.
        self.history = [dict(record) for record in state.log_history]
        self.tokens_at_start = getattr(state, "num_input_tokens_seen", 0) or 0
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]}  eval {task.fields[eval]}  {task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=state.max_steps, **self.fields)
        self.progress.update(self.task, completed=state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        self.eval_seconds += float(logs.get("eval_runtime", 0.0))
        elapsed = time.perf_counter() - self.started - self.eval_seconds
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
            self.progress.update(self.task, completed=state.global_step, **self.fields)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.train_seconds = time.perf_counter() - self.started - self.eval_seconds
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, **self.fields)
            self.progress.stop()
            self.progress = None
