"""Checkpoints that are safe to resume from, even after a kill -9 in the middle of writing one.

transformers writes `checkpoint-N/` file by file (weights, optimizer, scheduler, RNG states, trainer
state) and `Trainer.get_last_checkpoint` picks the highest N whether or not it was finished. hone marks a
checkpoint complete only after the Trainer has written all of it (`on_save` runs after the last file),
and resumes only from marked ones; an unmarked folder is what a crash left behind and is removed.

The mark records every file's size and sha256, so a checkpoint damaged after it was marked (a disk that
filled up, a copy cut short) is found before resuming: it is removed and the previous one is used.
Marks written before the sizes were recorded are checked by opening the checkpoint's files instead.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from hone.io import atomic_write_json, file_digest

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
            record = {"step": state.global_step, "epoch": state.epoch, "files": written_files(folder)}
            atomic_write_json(folder / COMPLETE, record)


def written_files(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {bytes, sha256}} of every file in a checkpoint folder but the mark itself."""
    return {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": file_digest(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != COMPLETE
    }


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


def damage(folder: Path) -> str | None:
    """Why a checkpoint marked complete cannot be resumed from (a file missing, cut short, changed) or None.

    Sizes are compared first, for every file; hashes only when all sizes match.
    """
    try:
        files = json.loads((folder / COMPLETE).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError) as exc:
        return f"{COMPLETE} is unreadable ({exc})"
    if files is None:
        return unopenable(folder)  # marked before hone recorded the files
    try:
        for name, written in files.items():
            path = folder / name
            if not path.resolve().is_relative_to(folder.resolve()):
                return f"{COMPLETE} names {name!r}, outside the checkpoint"
            if not path.is_file():
                return f"{name} is missing"
            size = path.stat().st_size
            if size != written["bytes"]:
                cut = " (cut short)" if size < written["bytes"] else ""
                return f"{name} is {size} bytes; {written['bytes']} were written{cut}"
        for name, written in files.items():
            if file_digest(folder / name) != written["sha256"]:
                return f"{name} changed after it was written (its sha256 differs)"
    except (AttributeError, KeyError, TypeError):
        return f"{COMPLETE} is malformed"
    return None


def unopenable(folder: Path) -> str | None:
    """Why one of a checkpoint's weight, state or JSON files does not open, or None when all do."""
    from safetensors import safe_open

    for path in sorted(folder.rglob("*")):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt"):
                    pass
            elif path.suffix in (".pt", ".pth", ".bin"):  # torch.save writes zip archives
                zipfile.ZipFile(path).close()
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
        except Exception as exc:
            return f"{path.relative_to(folder)} does not open ({type(exc).__name__}: {exc})"
    return None


def remove_damaged(run_path: Path) -> list[tuple[Path, str]]:
    """Remove, newest first, the complete checkpoints that are damaged, up to the newest intact one.

    Returns each removed checkpoint with the reason. Removed rather than skipped: the Trainer writes the
    same step's checkpoint into the same folder again, and a stale mark must not vouch for its files.
    """
    removed = []
    for _, path, done in reversed(checkpoint_steps(run_path)):
        if not done:
            continue
        reason = damage(path)
        if reason is None:
            break
        shutil.rmtree(path, ignore_errors=True)
        removed.append((path, reason))
    return removed


def remove_incomplete(run_path: Path) -> list[Path]:
    """Delete checkpoint folders a crash left half-written, so no later step mistakes them for real."""
    removed = []
    for _, path, done in checkpoint_steps(run_path):
        if not done:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
