"""Atomic file writes: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))


def file_digest(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (model files are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_dead_staging(folder: Path) -> list[Path]:
    """Remove `.tmp-<name>-pid<pid>-...` and `.old-<name>-pid<pid>` leftovers of processes no longer running.

    A writer killed (-9) mid-write leaves its staging folder behind; nothing else would ever remove it, and
    an export's is the size of a model. One still running (another writer) is left alone.
    """
    if not folder.is_dir():
        return []
    removed = []
    for path in [*folder.glob(".tmp-*"), *folder.glob(".old-*")]:
        pid = staging_pid(path.name)
        if pid is not None and not alive(pid) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


STAGING_PID = re.compile(r"-pid(\d+)(?:-|$)")


def staging_pid(name: str) -> int | None:
    """The process id in a staging folder's name (`.tmp-<name>-pid<pid>-<random>`, `.old-<name>-pid<pid>`)."""
    found = STAGING_PID.search(name)
    return int(found.group(1)) if found else None


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """An empty sibling folder that replaces `target` whole when the block succeeds, else is removed.

    Leftovers of earlier writers that were killed are removed first (see `remove_dead_staging`).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(target.parent)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-pid{os.getpid()}-"))
    staging.chmod(0o755)
    try:
        yield staging
        retired = target.parent / f".old-{target.name}-pid{os.getpid()}"
        if target.exists():
            os.replace(target, retired)  # a folder cannot be renamed over a non-empty one
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
