"""kill -9 at any moment leaves nothing half-written: `hone data prepare` and `hone export --merge` run as
real processes and are SIGKILLed at moments picked by watching the file system (the source is open, the
staging folder appears, a file in it is being written, the finished folder is renamed into place).

After each kill every folder a reader can see is whole: a dataset version has its card, every split the
card lists, each line readable and the content hash it is named by; a merged model has every file its
export.json lists, with those sha256s. Only hidden staging folders (`.tmp-...`) may be left behind, and the
next run removes them. Then the same command, run again, succeeds with the result of a run that was never
interrupted.

A kill that lands after the process finished proves nothing, so each kill point inside the writing
window asserts that the process died of the kill and left its staging folder behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from completed_runs import lora_run
from hone.cli import main
from hone.data.load import load_split
from hone.data.version import dataset_hash
from hone.export.merge import EXPORT_RECORD, verify_export
from hone.io import file_digest

REPO = Path(__file__).resolve().parents[2]
HONE = [sys.executable, "-c", "from hone.cli import main; main()"]
SPLIT_FILES = ["card.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
POLL_SECONDS = 0.0005
SOURCE_EXAMPLES = 4000  # enough that writing the version takes a few hundred milliseconds

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches /proc for open files")


def start_hone(log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`hone ARGS` as its own process, stdout and stderr into `log` (a pipe nobody reads could block it)."""
    with log.open("wb") as stream:
        return subprocess.Popen(
            [*HONE, *args],
            cwd=REPO,
            env={**(env or os.environ), "COLUMNS": "400"},
            stdout=stream,
            stderr=subprocess.STDOUT,
        )


def names(folder: Path) -> list[str]:
    """The entries of a folder that may not exist yet, or may be renamed away while it is read."""
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


def staging_folders(folder: Path) -> set[str]:
    return {name for name in names(folder) if name.startswith(".tmp-")}


def kill_when(process: subprocess.Popen[bytes], moment: Callable[[], bool], log: Path) -> bool:
    """SIGKILL `process` as soon as `moment()` holds; True if it died of that, False if it exited first."""
    deadline = time.monotonic() + 180
    while process.poll() is None:
        if moment():
            process.send_signal(signal.SIGKILL)
            break
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the moment to kill never came:\n{log.read_text(errors='replace')}")
        time.sleep(POLL_SECONDS)
    process.wait(timeout=60)
    output = log.read_text(errors="replace")
    assert process.returncode in (0, -signal.SIGKILL), output
    assert "Traceback" not in output
    return process.returncode == -signal.SIGKILL


def has_open(pid: int, path: Path) -> bool:
    """Whether process `pid` holds `path` open (Linux: its /proc/PID/fd links)."""
    fd_folder = Path(f"/proc/{pid}/fd")
    for fd in names(fd_folder):
        try:
            if os.readlink(fd_folder / fd) == str(path.resolve()):
                return True
        except OSError:  # closed between listing and reading
            continue
    return False


def run_in_process(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    """`hone ARGS` through the real entry point in this process (no second import of torch), exit 0."""
    monkeypatch.setattr(sys, "argv", ["hone", *args])
    with pytest.raises(SystemExit) as exited:
        main()
        raise SystemExit(0)
    assert exited.value.code in (0, None)


# hone data prepare ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    name: str
    moment: Callable[[Path, int, Path], bool]  # (out folder, pid, source) -> kill now
    mid_write: bool  # inside the staging window: the kill must leave the process's staging folder behind
    version_visible: bool | None  # whether the (whole) version is visible after the kill; None: either


def in_staging(out: Path, wanted: Callable[[list[str]], bool]) -> bool:
    return any(wanted(names(out / folder)) for folder in staging_folders(out))


def first_split_in_progress(out: Path, pid: int, source: Path) -> bool:
    return in_staging(out, lambda files: any(f.startswith(".train.jsonl.") for f in files))


def splits_written(out: Path, pid: int, source: Path) -> bool:
    return in_staging(out, lambda files: "test.jsonl" in files and "card.json" not in files)


def card_in_progress(out: Path, pid: int, source: Path) -> bool:
    return in_staging(out, lambda files: any(f.startswith(".card.json.") for f in files))


PREPARE_KILL_POINTS = [
    # The source is open while it is read, and again while the card hashes it: no version either way.
    KillPoint("reading the source", lambda out, pid, source: has_open(pid, source), False, False),
    KillPoint("staging folder created", lambda out, pid, source: bool(staging_folders(out)), True, False),
    KillPoint("first split half-written", first_split_in_progress, True, False),
    KillPoint("splits written, card being computed", splits_written, True, False),
    # A few milliseconds before the rename: the kill may land on either side of it.
    KillPoint("card being written", card_in_progress, False, None),
    KillPoint(
        "version folder renamed into place",
        lambda out, pid, source: any(not name.startswith(".") for name in names(out)),
        False,
        True,
    ),
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few thousand chats, stratifiable and without duplicates, so the version takes a while to write."""
    path = tmp_path_factory.mktemp("prepare-source") / "tickets.jsonl"
    topics = ["refund", "login", "crash", "invoice", "delivery", "password", "upgrade", "export"]
    rows = []
    for index in range(SOURCE_EXAMPLES):
        words = " ".join(topics[(index * 7 + step * 3) % len(topics)] for step in range(24))
        answer = {"category": topics[index % len(topics)], "ticket": index}
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"ticket {index}: {words}"},
                    {"role": "assistant", "content": json.dumps(answer)},
                ]
            }
        )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def prepare_args(source: Path, out: Path) -> list[str]:
    return ["data", "prepare", str(source), "--out", str(out), "--stratify-by", "category"]


@pytest.fixture(scope="module")
def uninterrupted(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The version folder an uninterrupted `hone data prepare` writes."""
    out = source.parent / "uninterrupted"
    log = source.parent / "uninterrupted.log"
    env = {**os.environ, "HONE_HOME": str(tmp_path_factory.getbasetemp() / "hone-home")}
    process = start_hone(log, *prepare_args(source, out), env=env)
    assert process.wait(timeout=300) == 0, log.read_text()
    (version,) = out.iterdir()
    return version


def complete_versions(out: Path) -> list[Path]:
    """Every visible folder under `out`, each checked to be a whole dataset version."""
    versions = [out / name for name in names(out) if not name.startswith(".")]
    for version in versions:
        assert sorted(p.name for p in version.iterdir()) == SPLIT_FILES, f"{version}: not whole"
        card = json.loads((version / "card.json").read_text(encoding="utf-8"))
        splits = {name: load_split(version / f"{name}.jsonl") for name in card["splits"]}
        for name, examples in splits.items():
            assert len(examples) == card["splits"][name]["examples"], f"{version}/{name}.jsonl: cut short"
        assert dataset_hash(splits) == card["version"]
        assert version.name == card["version"][:16]
    return versions


@pytest.mark.parametrize("point", PREPARE_KILL_POINTS, ids=lambda point: point.name)
def test_prepare_killed_leaves_no_half_version_and_reruns_to_the_same_hash(
    point: KillPoint, source: Path, uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "versions"
    log = tmp_path / "hone.log"
    process = start_hone(log, *prepare_args(source, out))

    killed = kill_when(process, lambda: point.moment(out, process.pid, source), log)

    assert killed, f"hone data prepare finished before the kill point {point.name!r}"
    left = staging_folders(out)
    if point.mid_write:
        assert any(f"-pid{process.pid}-" in name for name in left), "the kill landed outside the write"
    visible = [version.name for version in complete_versions(out)]
    if point.version_visible is not None:
        assert visible == ([uninterrupted.name] if point.version_visible else [])
    assert visible in ([], [uninterrupted.name])

    run_in_process(monkeypatch, *prepare_args(source, out))

    (version,) = complete_versions(out)
    assert version.name == uninterrupted.name
    for name in SPLIT_FILES:
        assert (version / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert staging_folders(out) == set(), "the rerun removed the killed process's staging folder"


# hone export --merge -------------------------------------------------------------------------------


def merged_state(run: Path) -> str:
    """'absent' or 'complete' (and then verified): a merged/ folder is never anything in between."""
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "completed", "the run folder survives the kill"
    export = run / "export"
    visible = [name for name in names(export) if not name.startswith(".")]
    assert visible in ([], ["merged"]), visible
    if not visible:
        return "absent"
    merged = export / "merged"
    verify_export(merged)
    recorded = json.loads((merged / EXPORT_RECORD).read_text(encoding="utf-8"))["sha256"]
    files = {p.relative_to(merged).as_posix() for p in merged.rglob("*") if p.is_file()}
    assert files == {*recorded, EXPORT_RECORD}, "merged/ holds exactly the files export.json records"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(recorded)
    return "complete"


def staging_has(export: Path, wanted: Callable[[list[str]], object]) -> Callable[[], bool]:
    return lambda: any(bool(wanted(names(export / folder))) for folder in staging_folders(export))


def kill_export(run: Path, moment: Callable[[], bool], log: Path) -> set[str]:
    """SIGKILL `hone export RUN --merge` at `moment`; the staging folders it left behind."""
    before = staging_folders(run / "export")
    process = start_hone(log, "export", str(run), "--merge")
    assert kill_when(process, moment, log), f"hone export finished before the kill:\n{log.read_text()}"
    return staging_folders(run / "export") - before


def assert_merged_model_is_base_plus_adapter(merged: Path, base: Path, adapter: Path) -> None:
    """The rerun's merged/ loads with plain transformers and holds base + LoRA update, weight for weight."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    expected_weights = expected.merge_and_unload().state_dict()
    loaded = AutoModelForCausalLM.from_pretrained(merged).state_dict()
    assert loaded.keys() == expected_weights.keys()
    for name, tensor in loaded.items():
        torch.testing.assert_close(tensor, expected_weights[name], msg=name)
    assert AutoTokenizer.from_pretrained(merged).chat_template


def test_export_killed_while_writing_leaves_no_partial_merged_folder(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed one after another on the same run, each attempt over the leftovers of the ones before."""
    run = lora_run(tmp_path / "runs", tiny_model_dir)
    export = run / "export"
    saved_by_hand = ("config.json", "generation_config.json")  # written before the weights
    moments: list[tuple[str, Callable[[], bool], str]] = [
        ("weights being saved", staging_has(export, lambda files: set(files) - set(saved_by_hand)), "absent"),
        (
            "tokenizer being saved",
            staging_has(export, lambda files: "tokenizer_config.json" in files),
            "absent",
        ),
        ("merged folder renamed into place", lambda: "merged" in names(export), "complete"),
    ]
    for name, moment, expected in moments:
        left = kill_export(run, moment, tmp_path / f"{name}.log")
        if expected == "absent":
            assert left, f"{name}: the kill landed outside the write"
        assert merged_state(run) == expected, name

    run_in_process(monkeypatch, "export", str(run), "--merge")

    assert staging_folders(export) == set(), "the rerun removed what the killed exports left behind"
    assert merged_state(run) == "complete"
    assert_merged_model_is_base_plus_adapter(export / "merged", tiny_model_dir, run / "adapter")
    recorded = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert recorded["artifacts"]["export_merged"] == "export/merged"


def test_export_killed_while_replacing_keeps_the_previous_merged_model(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = lora_run(tmp_path / "runs", tiny_model_dir)
    export = run / "export"
    run_in_process(monkeypatch, "export", str(run), "--merge")
    previous = {p.name: file_digest(p) for p in (export / "merged").iterdir()}

    left = kill_export(
        run, staging_has(export, lambda files: "model.safetensors" in files), tmp_path / "re.log"
    )

    assert left, "the kill landed outside the write"
    assert merged_state(run) == "complete"
    assert {p.name: file_digest(p) for p in (export / "merged").iterdir()} == previous
    run_in_process(monkeypatch, "export", str(run), "--merge")
    assert merged_state(run) == "complete"
