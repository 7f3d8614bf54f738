"""The run folder: everything one run produced, described by `manifest.json`.

Later stages (evaluation, the registry, serving) read a run only through this folder and its manifest,
never through the training code's internals. Layout:

    runs/<name>/
      manifest.json     what, from what, by which code, with which results (the lineage record)
      config.yaml       the resolved config, every default spelled out
      adapter/          PEFT adapter weights (LoRA/QLoRA) or model/ for full fine-tuning
      history.jsonl     training and validation loss per logged step
      checkpoints/      checkpoint-<step>/ for --resume; only those holding hone-complete.json are used
      tensorboard/      live TensorBoard events, when train.report_to asks for them
      export/           merged/ and gguf-<quant>/ written by `hone export`, each with export.json
      metrics.json      training summary (steps, losses, tokens/s, precision)
      ladder.json       the decision ladder: every rung's metrics, intervals, significance, cost, verdict
      report.html       the ladder as a self-contained page with charts
      eval/<rung>.jsonl   per-example predictions and scores of each rung

An evaluation run (`hone evaluate`, manifest `kind: evaluation`) holds config.yaml, manifest.json,
ladder.json, report.html and eval/; a training run (`kind: training`) the rest, and the ladder too when the
quickstart evaluated it.

The manifest is rewritten atomically at every stage, so its `status` (running, completed, failed) is
always true to what is on disk.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel

import hone
from hone import contract
from hone.config import HoneConfig, check_run_name, dump_config
from hone.contract import BaseModelRef, CodeVersion, Hardware, Manifest, RunKind, RunStatus
from hone.errors import HoneError
from hone.hardware import machine
from hone.io import atomic_write_text

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
METRICS = "metrics.json"
LADDER = "ladder.json"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def code_version() -> dict[str, Any]:
    """hone's version, and the git commit (with a dirty flag) when hone runs from a checkout."""
    source = Path(hone.__file__).resolve().parent
    version: dict[str, Any] = {"hone": hone.__version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            version["git_commit"] = commit.stdout.strip()
            status = subprocess.run(
                ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            version["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def default_run_name(config: HoneConfig, kind: RunKind = "training") -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if kind == "evaluation":
        return f"evaluate-{stamp}"
    return f"{config.train.method}-{config.train.adapter.kind}-{stamp}"


@dataclass
class RunFolder:
    path: Path

    @classmethod
    def create(cls, config: HoneConfig, kind: RunKind = "training", name: str | None = None) -> RunFolder:
        """Make the folder, write the resolved config and a `running` manifest. Refuses to overwrite a run.

        `kind` is `training` (a model was trained: method, adapter, weights) or `evaluation` (a ladder of
        existing models was evaluated: ladder.json, report.html). `name` overrides `run.name`.
        """
        name = name or config.run.name or default_run_name(config, kind)
        try:
            check_run_name(name)
        except ValueError as exc:
            raise HoneError(f"run.name: {name!r} {exc}") from None
        path = config.run.dir / name
        if path.exists():
            raise HoneError(f"{path}: run folder already exists; choose another run.name")
        path.mkdir(parents=True)
        run = cls(path)
        atomic_write_text(path / "config.yaml", dump_config(config))
        manifest = Manifest(
            name=name,
            kind=kind,
            status="running",
            created_at=now(),
            code_version=CodeVersion(**code_version()),
            hardware=Hardware(**machine()),
            base_model=BaseModelRef(reference=config.model.reference),
            artifacts={"config": "config.yaml"},
        )
        if kind == "training":
            manifest.method, manifest.adapter = config.train.method, config.train.adapter.kind
        contract.write(manifest, path / MANIFEST)
        return run

    @classmethod
    def open(cls, path: Path) -> RunFolder:
        if not (path / MANIFEST).is_file():
            raise HoneError(f"{path}: not a run folder (no {MANIFEST})")
        return cls(path)

    @property
    def manifest(self) -> Manifest:
        return contract.read(Manifest, self.path / MANIFEST)

    def update(self, **fields: Any) -> Manifest:
        """Merge top-level fields into the manifest (dicts are merged one level deep), validate, rewrite.

        Values may be contract records or plain JSON values; the result must still be a valid Manifest.
        """
        current = contract.to_json(self.manifest)
        for key, value in fields.items():
            if isinstance(value, BaseModel):
                value = contract.to_json(value)
            if isinstance(value, dict) and isinstance(current.get(key), dict):
                current[key] = {**current[key], **value}
            else:
                current[key] = value
        manifest = contract.parse(Manifest, current, self.path / MANIFEST)
        contract.write(manifest, self.path / MANIFEST)
        return manifest

    def add_artifact(self, name: str, relative_path: str) -> None:
        self.update(artifacts={name: relative_path})

    def finish(self, status: RunStatus, error: str | None = None) -> None:
        fields: dict[str, Any] = {"status": status, "finished_at": now()}
        if error:
            fields["error"] = error
        self.update(**fields)

    def evaluation_run(self) -> Path | None:
        """The evaluation run that judged this training run (the quickstart's `<run>-ladder`), if linked."""
        link = self.manifest.evaluation
        return sibling_run(self.path, link.run, "evaluation.run") if link and link.run else None

    def evaluated_run(self) -> Path | None:
        """The training run this evaluation run was made for, if it names one."""
        evaluates = self.manifest.evaluates
        return sibling_run(self.path, evaluates, "evaluates") if evaluates else None


def read_history(run_path: Path) -> list[dict[str, Any]]:
    """The rows of a run's history.jsonl (none when it has none).

    Training writes the file atomically, but a copy cut short or a full disk can leave a broken line; the
    loss curve is a record, not an input, so such a line is skipped with a warning naming it rather than
    stopping the tracking, evaluation or registration that reads the run.
    """
    path = run_path / "history.jsonl"
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            logger.warning("%s line %d: not a JSON object; skipped", path, number)
    return rows


def inside_run(run_path: Path, recorded: str, field: str) -> Path:
    """The path a manifest `field` records relative to its run folder, refused when it leads out of it.

    A manifest is input like any other file: `../../etc` or an absolute path (or a link inside the run
    pointing elsewhere) must not make a reader load or log what lies outside the run.
    """
    where = run_path / recorded
    if PurePath(recorded).is_absolute() or not where.resolve().is_relative_to(run_path.resolve()):
        raise HoneError(
            f"{run_path / MANIFEST}: {field}: {recorded!r} leads outside the run folder; "
            "expected a path inside it, such as 'adapter'"
        )
    return where


def sibling_run(run_path: Path, recorded: str, field: str) -> Path:
    """A link to another run folder in the same runs folder (`../<name>`), refused when it leads elsewhere."""
    parts = PurePath(recorded).parts
    where = run_path / recorded
    plain = len(parts) == 2 and parts[0] == ".." and parts[1] not in (".", "..")
    if not plain or where.resolve().parent != run_path.resolve().parent:
        raise HoneError(
            f"{run_path / MANIFEST}: {field}: {recorded!r} is not a run folder beside this one; "
            "expected '../<run name>'"
        )
    return where


class Terminated(SystemExit):
    """SIGTERM turned into an exception, so a run that is stopped records it before the process ends.

    A SystemExit, so no `except Exception` on the way swallows it; it exits 143 (128 + SIGTERM) as the
    signal itself would have.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


@contextmanager
def failure_recorded(
    run: RunFolder, record: bool = True, also: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Any exception in the block, SIGTERM included, marks the run `failed` with the error, then propagates.

    Without this a run that fails after its folder exists (a model that does not load, a `kill`) would
    say `running` forever. `record=False` (processes other than the main one) only turns SIGTERM into
    `Terminated`; `also` is called with the error text while further SIGTERMs are held off.
    """
    handling = threading.current_thread() is threading.main_thread()  # signals reach the main thread only
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if handling else None
    try:
        yield
    except BaseException as exc:
        if record:
            if handling:  # a second SIGTERM must not cut the record short
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            error = f"{type(exc).__name__}: {exc}"
            try:
                run.finish("failed", error=error)
                if also is not None:
                    also(error)
            except Exception as unrecorded:  # the original error is the one to show
                logger.warning("%s: could not record the failure: %s", run.path, unrecorded)
        raise
    finally:
        if handling:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@dataclass(frozen=True)
class FinishedRun:
    """What later stages (evaluation, export, the registry) need from a completed run folder."""

    path: Path
    name: str
    method: str  # sft, pretrain, dpo, reward or rl
    kind: str  # lora, qlora or full
    config: HoneConfig
    base: Path  # the base model's Hugging Face folder
    weights: Path  # adapter/ or model/
    manifest: Manifest

    @property
    def training_precision(self) -> str:
        """The precision the run trained at, as training recorded it (else as config and hardware imply)."""
        training = self.manifest.training
        chosen = training.precision if training else self.config.train.precision
        if chosen == "auto":
            hardware = self.manifest.hardware
            chosen = "bf16" if hardware.cuda else "fp32"  # auto picks bf16 on every GPU that has it
            logger.info("run precision was auto on %s: assuming %s", hardware.gpu or "CPU", chosen)
        return chosen


def open_finished_run(run_path: Path, use: str) -> FinishedRun:
    """The completed run with its config, base and weights, or a HoneError naming what is missing.

    `use` finishes the refusal sentence ("only completed runs <use>").
    """
    from hone.config import load_config
    from hone.models.resolve import resolve_model

    manifest = RunFolder.open(run_path).manifest
    if manifest.status != "completed":
        raise HoneError(f"{run_path}: run status is {manifest.status!r}; only completed runs {use}")
    if manifest.kind != "training" or manifest.method is None or manifest.adapter is None:
        raise HoneError(f"{run_path}: a {manifest.kind} run holds no trained model; only training runs {use}")
    weights = inside_run(run_path, manifest.artifacts.get("weights", ""), "artifacts.weights")
    if not (weights / "config.json").is_file() and not (weights / "adapter_config.json").is_file():
        raise HoneError(f"{weights}: the run's weights are missing (expected an adapter/ or model/ folder)")
    recorded = Path(manifest.base_model.path) if manifest.base_model.path else None
    base_path = recorded if recorded and recorded.is_dir() else resolve_model(manifest.base_model.reference)
    return FinishedRun(
        path=run_path,
        name=manifest.name or run_path.name,
        method=manifest.method,
        kind=manifest.adapter,
        config=load_config(run_path / "config.yaml"),
        base=base_path,
        weights=weights,
        manifest=manifest,
    )


LANGUAGE_METHODS = ("sft", "pretrain", "dpo", "rl")  # runs whose model writes text; a `reward` run scores it


def open_language_model_run(run_path: Path, use: str) -> FinishedRun:
    """A completed run whose model generates text: what export, the ladder and a judge can use."""
    run = open_finished_run(run_path, use)
    if run.method not in LANGUAGE_METHODS:
        raise HoneError(
            f"{run_path}: a {run.method} run scores text rather than writing it; "
            f"only language-model runs {use}"
        )
    return run
