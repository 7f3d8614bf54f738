"""The training callback off a terminal: plain lines with the bar's figures, from transformers' own
callback flow (a fake clock) and from a real short run on the tiny model."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from rich.console import Console
from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

from hone.config import HoneConfig
from hone.train.pipeline import run_training
from hone.train.progress import RichProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(progress: RichProgress, clock: FakeClock, tmp_path: Path, steps: int = 10) -> None:
    """The Trainer's calls for `steps` steps of 1 s and 100 tokens: log every 2, evaluate every 5."""
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=5,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
    )
    state = TrainerState(max_steps=steps, logging_steps=2, eval_steps=5)
    control = TrainerControl()
    handler = CallbackHandler([DefaultFlowCallback, progress], None, None, None, None)
    control = handler.on_train_begin(args, state, control)
    for step in range(1, steps + 1):
        control = handler.on_step_begin(args, state, control)
        clock.now = float(step)
        state.global_step, state.epoch, state.num_input_tokens_seen = step, step / steps, 100 * step
        control = handler.on_step_end(args, state, control)
        if control.should_log:
            control = handler.on_log(args, state, control, {"loss": 2.0 - step / 10})
        if control.should_evaluate:
            metrics = {"eval_loss": 3.0 - step / 10, "eval_runtime": 0.0}
            control = handler.on_log(args, state, control, metrics)
            control = handler.on_evaluate(args, state, control, metrics=metrics)
    handler.on_train_end(args, state, control)


def test_off_a_terminal_lines_carry_the_loss_logged_at_their_step(tmp_path: Path) -> None:
    buffer = io.StringIO()
    clock = FakeClock()
    progress = RichProgress(Console(file=buffer, force_terminal=False), "sft", every_steps=4, clock=clock)
    drive(progress, clock, tmp_path)
    assert buffer.getvalue().splitlines() == [
        "sft: 4/10 steps (40%)  loss 1.6000  eval -  100 tok/s  elapsed 0:00:04  ETA 0:00:06",
        "sft: 8/10 steps (80%)  loss 1.2000  eval 2.5000  100 tok/s  elapsed 0:00:08  ETA 0:00:02",
        "sft: 10/10 steps (100%)  loss 1.0000  eval 2.0000  100 tok/s  elapsed 0:00:10  ETA 0:00:00",
    ]
    assert [row["step"] for row in progress.history if "loss" in row] == [2, 4, 6, 8, 10]
    assert progress.train_seconds == 10.0


def test_on_a_terminal_the_callback_draws_its_bar_and_no_plain_lines(tmp_path: Path) -> None:
    buffer = io.StringIO()
    clock = FakeClock()
    progress = RichProgress(
        Console(file=buffer, force_terminal=True, width=160), "sft", every_steps=4, clock=clock
    )
    drive(progress, clock, tmp_path)
    drawn = buffer.getvalue()
    assert "10/10 steps" in drawn and "loss 1.0000  eval 2.0000" in drawn
    assert "elapsed" not in drawn and "(40%)" not in drawn


def test_a_bar_stopped_mid_run_stops_drawing(tmp_path: Path) -> None:
    buffer = io.StringIO()
    clock = FakeClock()
    console = Console(file=buffer, force_terminal=True, width=160)
    progress = RichProgress(console, "sft", every_steps=4, clock=clock)
    drive(progress, clock, tmp_path, steps=3)  # ends with on_train_end
    progress.progress = None
    handler_args = TrainingArguments(output_dir=str(tmp_path), max_steps=10, report_to="none", use_cpu=True)
    progress.on_train_begin(handler_args, TrainerState(max_steps=10), TrainerControl())
    assert progress.progress is not None and progress.progress.live, "a live bar is drawing"
    progress.close()  # what training does when it raises
    assert progress.progress is None
    assert console._live_stack == [], "no live display left on the console"


def test_a_real_run_piped_to_a_log_shows_every_step(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"ticket {n}"},
                {"role": "assistant", "content": f"answer {n}"},
            ]
        }
        for n in range(12)
    ]
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8"
        )
    config = HoneConfig.model_validate(
        {
            "model": {"reference": str(tiny_model_dir), "max_length": 64},
            "data": {
                "train": str(tmp_path / "train.jsonl"),
                "validation": str(tmp_path / "validation.jsonl"),
            },
            "train": {
                "adapter": {"kind": "lora", "r": 4, "alpha": 8},
                "max_steps": 3,
                "batch_size": 2,
                "eval_every": 3,
                "logging_steps": 1,
            },
            "run": {"name": "piped", "dir": str(tmp_path / "runs")},
            "track": {"enabled": False},
        }
    )
    buffer = io.StringIO()
    run = run_training(config, Console(file=buffer, force_terminal=False, width=160))
    assert run.manifest.status == "completed"
    log = buffer.getvalue()
    assert "\x1b" not in log
    figures = r"loss (\d+\.\d{4})  eval (-|\d+\.\d{4})  (\d+) tok/s  elapsed \d:\d\d:\d\d  ETA \d:\d\d:\d\d"
    lines = re.findall(rf"^sft: (\d)/3 steps \(\d+%\)  {figures}$", log, flags=re.MULTILINE)
    assert [line[0] for line in lines] == ["1", "2", "3"]
    assert lines[-1][2] != "-", "the last line waits for the validation at step 3"
    history = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    losses = [f"{row['loss']:.4f}" for row in history if "loss" in row]
    assert [line[1] for line in lines] == losses
