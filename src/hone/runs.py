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
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hone
from hone.config import HoneConfig, dump_config
from hone.errors import HoneError
from hone.io import atomic_write_json, atomic_write_text

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


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


def hardware() -> dict[str, Any]:
    """The machine a run ran on: enough to compare its speed with another run's."""
    import torch

    from hone.train.hardware import cpu_bf16_native, cpu_name

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cpu_bf16": cpu_bf16_native(),  # AMX, AVX512-BF16 or None (bf16 emulated): decides CPU precision
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def default_run_name(config: HoneConfig, kind: str = "training") -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if kind == "evaluation":
        return f"evaluate-{stamp}"
    return f"{config.train.method}-{config.train.adapter.kind}-{stamp}"


@dataclass
class RunFolder:
    path: Path

    @classmethod
    def create(cls, config: HoneConfig, kind: str = "training") -> RunFolder:
        """Make the folder, write the resolved config and a `running` manifest. Refuses to overwrite a run.

        `kind` is `training` (a model was trained: method, adapter, weights) or `evaluation` (a ladder of
        existing models was evaluated: ladder.json, report.html).
        """
        name = config.run.name or default_run_name(config, kind)
        path = config.run.dir / name
        if path.exists():
            raise HoneError(f"{path}: run folder already exists; choose another run.name")
        path.mkdir(parents=True)
        run = cls(path)
        atomic_write_text(path / "config.yaml", dump_config(config))
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "kind": kind,
            "status": "running",
            "created_at": now(),
            "code_version": code_version(),
            "hardware": hardware(),
            "base_model": {"reference": config.model.reference},
            "artifacts": {"config": "config.yaml"},
        }
        if kind == "training":
            manifest.update(method=config.train.method, adapter=config.train.adapter.kind)
        atomic_write_json(path / MANIFEST, manifest)
        return run

    @classmethod
    def open(cls, path: Path) -> RunFolder:
        if not (path / MANIFEST).is_file():
            raise HoneError(f"{path}: not a run folder (no {MANIFEST})")
        return cls(path)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge top-level fields into the manifest (dicts are merged one level deep) and rewrite it."""
        manifest = self.manifest
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key] = {**manifest[key], **value}
            else:
                manifest[key] = value
        atomic_write_json(self.path / MANIFEST, manifest)
        return manifest

    def add_artifact(self, name: str, relative_path: str) -> None:
        self.update(artifacts={name: relative_path})

    def finish(self, status: str, error: str | None = None) -> None:
        fields: dict[str, Any] = {"status": status, "finished_at": now()}
        if error:
            fields["error"] = error
        self.update(**fields)


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
    manifest: dict[str, Any]


def open_finished_run(run_path: Path, use: str) -> FinishedRun:
    """The completed run with its config, base and weights, or a HoneError naming what is missing.

    `use` finishes the refusal sentence ("only completed runs <use>").
    """
    from hone.config import load_config
    from hone.models.resolve import resolve_model

    manifest = RunFolder.open(run_path).manifest
    if manifest.get("status") != "completed":
        raise HoneError(f"{run_path}: run status is {manifest.get('status')!r}; only completed runs {use}")
    weights = run_path / str((manifest.get("artifacts") or {}).get("weights", ""))
    if not (weights / "config.json").is_file() and not (weights / "adapter_config.json").is_file():
        raise HoneError(f"{weights}: the run's weights are missing (expected an adapter/ or model/ folder)")
    base = manifest.get("base_model") or {}
    recorded = Path(base["path"]) if base.get("path") else None
    base_path = recorded if recorded and recorded.is_dir() else resolve_model(base["reference"])
    return FinishedRun(
        path=run_path,
        name=str(manifest.get("name") or run_path.name),
        method=str(manifest.get("method")),
        kind=str(manifest.get("adapter")),
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
