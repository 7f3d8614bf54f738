"""Staging folders: what a killed writer left behind is removed by the next writer, a live writer's is not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hone.io import remove_dead_staging, staged_folder, staging_pid


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(process.stdout)


def test_leftovers_of_dead_writers_go_and_live_ones_stay(tmp_path: Path) -> None:
    gone, live = dead_pid(), os.getpid()
    for name in (f".tmp-merged-pid{gone}-a1b2", f".old-merged-pid{gone}", f".tmp-3f2a-pid{gone}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"x" * 10)
    (tmp_path / f".tmp-merged-pid{live}-c3d4").mkdir()
    (tmp_path / ".tmp-unnamed").mkdir()  # not ours: no pid in the name
    (tmp_path / "merged").mkdir()

    removed = remove_dead_staging(tmp_path)

    assert sorted(path.name for path in removed) == sorted(
        [f".tmp-merged-pid{gone}-a1b2", f".old-merged-pid{gone}", f".tmp-3f2a-pid{gone}"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".tmp-merged-pid{live}-c3d4", ".tmp-unnamed", "merged"]
    )


def test_a_staged_folder_names_its_writer_and_cleans_before_writing(tmp_path: Path) -> None:
    gone = dead_pid()
    (tmp_path / f".tmp-out-pid{gone}-zzzz").mkdir()
    with staged_folder(tmp_path / "out") as staging:
        assert staging_pid(staging.name) == os.getpid()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == [staging.name]
        (staging / "file").write_text("done")
    assert (tmp_path / "out" / "file").read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert staging_pid(".tmp-1234567890-pid42-98765432") == 42 and staging_pid(".tmp-x-12345678") is None
