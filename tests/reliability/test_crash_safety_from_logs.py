"""kill -9 during `hone data from-logs` leaves nothing half-written: the command runs as a real process over
a request log of a few thousand corrections and is SIGKILLed at moments picked by watching the file system
(the staging folder appears, the preference pairs are being written, the card is being written, the
finished folder is renamed into place), with test_crash_safety.py's harness.

After each kill every visible folder is a whole version: the files its card names, each line readable, the
content hash it is named by. The same command, run again, writes what an uninterrupted run writes and
removes the killed process's staging folder.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from test_crash_safety import kill_when, names, run_in_process, staging_folders, start_hone

from hone.data.load import load_split
from hone.data.version import dataset_hash
from hone.serve.log import FEEDBACK, REQUESTS, RequestLog

CORRECTIONS = 4000  # enough that writing the version takes a few hundred milliseconds
VERSION_FILES = ["card.json", "preferences.jsonl", "train.jsonl", "validation.jsonl"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches /proc for open files")


@pytest.fixture(scope="module")
def serve_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A serve config whose request log holds CORRECTIONS corrected chat answers."""
    folder = tmp_path_factory.mktemp("from-logs")
    url = f"sqlite:///{folder / 'requests.db'}"
    now = time.time()
    requests, ratings = [], []
    for index in range(CORRECTIONS):
        prompt = f"ticket {index}: my order {index} was charged twice and never arrived at my address"
        response_id = f"chatcmpl-{index:05d}"
        messages = json.dumps([{"role": "user", "content": prompt}])
        requests.append(
            {
                "id": response_id,
                "created": now,
                "endpoint": "chat",
                "requested": "support",
                "version": "support/1",
                "status": 200,
                "request": messages,
                "response": "shipping",
            }
        )
        ratings.append(
            {
                "id": f"fb-{index:05d}",
                "response_id": response_id,
                "created": now,
                "rating": "down",
                "score": 0.0,
                "correction": f"billing, ticket {index}",
            }
        )
    log = RequestLog(url)
    with log.engine.begin() as connection:  # one transaction: thousands of log.write calls take a while
        connection.execute(REQUESTS.insert(), requests)
        connection.execute(FEEDBACK.insert(), ratings)
    log.close()
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump({"serve": {"request_log": url}}), encoding="utf-8")
    return path


def from_logs_args(config: Path, out: Path) -> list[str]:
    return ["data", "from-logs", "-c", str(config), "--since", "1d", "--out", str(out)]


@pytest.fixture(scope="module")
def uninterrupted(serve_config: Path) -> Path:
    out = serve_config.parent / "uninterrupted"
    log = serve_config.parent / "uninterrupted.log"
    process = start_hone(log, *from_logs_args(serve_config, out))
    assert process.wait(timeout=300) == 0, log.read_text()
    (version,) = out.iterdir()
    return version


def complete_versions(out: Path) -> list[Path]:
    """Every visible folder under `out`, each checked to be a whole dataset version."""
    versions = [out / name for name in names(out) if not name.startswith(".")]
    for version in versions:
        assert sorted(p.name for p in version.iterdir()) == VERSION_FILES, f"{version}: not whole"
        card = json.loads((version / "card.json").read_text(encoding="utf-8"))
        files = {
            name: load_split(version / f"{name}.jsonl") for name in ("train", "validation", "preferences")
        }
        assert len(files["preferences"]) == card["preferences"]["pairs"], f"{version}: pairs cut short"
        for name in ("train", "validation"):
            assert len(files[name]) == card["splits"][name]["examples"], f"{version}/{name}.jsonl: cut short"
        assert dataset_hash(files) == card["version"] and version.name == card["version"][:16]
    return versions


def in_staging(out: Path, wanted: Callable[[list[str]], bool]) -> bool:
    return any(wanted(names(out / folder)) for folder in staging_folders(out))


@dataclass(frozen=True)
class KillPoint:
    name: str
    moment: Callable[[Path], bool]
    mid_write: bool  # inside the staging window: the kill must leave the process's staging folder behind
    version_visible: bool | None  # whether the (whole) version is visible after the kill; None: either


KILL_POINTS = [
    KillPoint("staging folder created", lambda out: bool(staging_folders(out)), True, False),
    KillPoint(
        "pairs half-written",
        lambda out: in_staging(out, lambda files: any(f.startswith(".preferences.jsonl.") for f in files)),
        True,
        False,
    ),
    # A few milliseconds before the rename: the kill may land on either side of it.
    KillPoint(
        "card being written",
        lambda out: in_staging(out, lambda files: any(f.startswith(".card.json.") for f in files)),
        False,
        None,
    ),
    KillPoint(
        "version folder renamed into place",
        lambda out: any(not name.startswith(".") for name in names(out)),
        False,
        True,
    ),
]


@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda point: point.name)
def test_from_logs_killed_leaves_no_half_version_and_reruns_to_the_same_hash(
    point: KillPoint, serve_config: Path, uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "versions"
    log = tmp_path / "hone.log"
    process = start_hone(log, *from_logs_args(serve_config, out))

    killed = kill_when(process, lambda: point.moment(out), log)

    assert killed, f"hone data from-logs finished before the kill point {point.name!r}"
    if point.mid_write:
        left = staging_folders(out)
        assert any(f"-pid{process.pid}-" in name for name in left), "the kill landed outside the write"
    visible = [version.name for version in complete_versions(out)]
    if point.version_visible is not None:
        assert visible == ([uninterrupted.name] if point.version_visible else [])
    assert visible in ([], [uninterrupted.name])

    run_in_process(monkeypatch, *from_logs_args(serve_config, out))

    (version,) = complete_versions(out)
    assert version.name == uninterrupted.name
    for name in VERSION_FILES[1:]:  # the card differs only in the window's times
        assert (version / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert staging_folders(out) == set(), "the rerun removed the killed process's staging folder"
