"""Which checkpoint `--resume` may use: marked complete, and its files as they were when it was marked."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from hone.train.checkpoints import COMPLETE, MarkComplete, damage, latest_complete, remove_damaged


def write_checkpoint(run: Path, step: int, marked: bool = True) -> Path:
    """The files the Trainer writes for a LoRA checkpoint, marked complete by hone's real callback."""
    folder = run / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file(
        {"lora_A": torch.randn(4, 64), "lora_B": torch.randn(64, 4)}, folder / "adapter_model.safetensors"
    )
    torch.save({"state": {0: {"exp_avg": torch.randn(256)}}}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if marked:
        args = SimpleNamespace(output_dir=str(folder.parent))
        state = SimpleNamespace(is_world_process_zero=True, global_step=step, epoch=step / 8)
        MarkComplete().on_save(args, state, control=None)
    return folder


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_the_mark_records_every_file_and_an_intact_checkpoint_passes(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 4)
    files = json.loads((folder / COMPLETE).read_text())["files"]
    assert sorted(files) == ["adapter_model.safetensors", "optimizer.pt", "trainer_state.json"]
    assert files["optimizer.pt"]["bytes"] == (folder / "optimizer.pt").stat().st_size
    assert len(files["optimizer.pt"]["sha256"]) == 64
    assert damage(folder) is None


def test_a_file_cut_short_changed_or_missing_is_damage(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 4)
    optimizer = folder / "optimizer.pt"
    written = optimizer.read_bytes()
    cut_short(optimizer)
    assert damage(folder) == (
        f"optimizer.pt is {len(written) // 2} bytes; {len(written)} were written (cut short)"
    )
    optimizer.write_bytes(written + b"\0")
    assert damage(folder) == f"optimizer.pt is {len(written) + 1} bytes; {len(written)} were written"
    optimizer.write_bytes(written[:-1] + bytes([written[-1] ^ 1]))  # same size, one bit flipped
    assert damage(folder) == "optimizer.pt changed after it was written (its sha256 differs)"
    optimizer.unlink()
    assert damage(folder) == "optimizer.pt is missing"


def test_a_mark_without_files_is_checked_by_opening_them(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 4)
    (folder / COMPLETE).write_text(json.dumps({"step": 4, "epoch": 0.5}))  # as older hone wrote it
    assert damage(folder) is None
    weights = folder / "adapter_model.safetensors"
    intact = weights.read_bytes()
    cut_short(weights)
    assert (damage(folder) or "").startswith("adapter_model.safetensors does not open (SafetensorError")
    weights.write_bytes(intact)
    cut_short(folder / "optimizer.pt")
    assert (damage(folder) or "").startswith("optimizer.pt does not open (BadZipFile")


def test_a_mark_naming_a_file_outside_the_checkpoint_is_damage(tmp_path: Path) -> None:
    folder = write_checkpoint(tmp_path, 4)
    (tmp_path / "secret").write_text("x")
    (folder / COMPLETE).write_text(json.dumps({"files": {"../../../secret": {"bytes": 1, "sha256": "0"}}}))
    assert damage(folder) == f"{COMPLETE} names '../../../secret', outside the checkpoint"
    (folder / COMPLETE).write_text(json.dumps({"files": ["optimizer.pt"]}))
    assert damage(folder) == f"{COMPLETE} is malformed"


@pytest.mark.parametrize("damaged", ["optimizer.pt", "adapter_model.safetensors"])
def test_damaged_newest_checkpoints_are_removed_down_to_an_intact_one(tmp_path: Path, damaged: str) -> None:
    oldest, middle = write_checkpoint(tmp_path, 4), write_checkpoint(tmp_path, 8)
    newer, newest = write_checkpoint(tmp_path, 12), write_checkpoint(tmp_path, 16, marked=False)
    cut_short(newer / damaged)
    cut_short(oldest / damaged)  # older than the intact one: not looked at, not removed

    removed = remove_damaged(tmp_path)

    assert [(path.name, reason.split(" ")[0]) for path, reason in removed] == [("checkpoint-12", damaged)]
    assert not newer.exists()
    assert newest.exists(), "an unmarked checkpoint is remove_incomplete's to remove"
    assert latest_complete(tmp_path) == middle
    assert remove_damaged(tmp_path) == []
