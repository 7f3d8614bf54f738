"""Checkpoints that are safe to resume from, even after a kill -9 in the middle of writing one.

transformers writes `checkpoint-N/` file by file (weights, optimizer, scheduler, RNG states, trainer
state) and `Trainer.get_last_checkpoint` picks the highest N whether or not it was finished. hone marks a
checkpoint complete only after the Trainer has written all of it (`on_save` runs after the last file),
and resumes only from marked ones; an unmarked folder is what a crash left behind and is removed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from hone.io import atomic_write_json

CHECKPOINTS = "checkpoints"
COMPLETE = "hone-complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


class MarkComplete(TrainerCallback):
    """Writes `hone-complete.json` into each checkpoint once the Trainer has finished writing it."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            atomic_write_json(folder / COMPLETE, {"step": state.global_step, "epoch": state.epoch})


def checkpoint_steps(run_path: Path) -> list[tuple[int, Path, bool]]:
    """Every checkpoint folder of a run as (step, path, complete), oldest first."""
    root = run_path / CHECKPOINTS
    found = []
    for child in root.iterdir() if root.is_dir() else ():
        match = _NAME.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child, (child / COMPLETE).is_file()))
    return sorted(found)


def latest_complete(run_path: Path) -> Path | None:
    """The newest checkpoint that was written completely, or None."""
    complete = [path for _, path, done in checkpoint_steps(run_path) if done]
    return complete[-1] if complete else None


def remove_incomplete(run_path: Path) -> list[Path]:
    """Delete checkpoint folders a crash left half-written, so no later step mistakes them for real."""
    removed = []
    for _, path, done in checkpoint_steps(run_path):
        if not done:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
