"""Merge a run's adapter into its base: one plain safetensors folder that any Hugging Face tool loads."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from hone.errors import HoneError
from hone.io import atomic_write_json, file_digest, staged_folder
from hone.models.resolve import load_tokenizer
from hone.models.trained import check_weights, merged_model, read_json_object
from hone.runs import FinishedRun, RunFolder, code_version, now, open_language_model_run

EXPORT_RECORD = "export.json"

QLORA_REFUSAL = (
    "{run}: this QLoRA adapter was trained against the NF4-rounded base weights, not the original ones. "
    "Merging it into the full-precision base gives a different model from the one that was trained, and "
    "merging it into the 4-bit base re-rounds every merged weight to NF4, losing most of the update. "
    "Use --dequantize: hone loads the base in 4-bit exactly as in training, dequantizes it to fp32 and "
    "merges the adapter into that, which is the model that was trained (at the size of an fp32 model)."
)


def record_export(folder: Path, run: FinishedRun, kind: str, **details: Any) -> None:
    """export.json: where the export came from, and the sha256 of every file written, which `verify_export`
    checks before hone reads the export again."""
    record = {
        "kind": kind,
        "source_run": str(run.path.resolve()),
        "run_name": run.name,
        "adapter": run.kind,
        "base_model": run.config.model.reference,
        "created_at": now(),
        "code_version": code_version(),
        **details,
        "sha256": {
            file.relative_to(folder).as_posix(): file_digest(file)
            for file in sorted(folder.rglob("*"))
            if file.is_file() and file.name != EXPORT_RECORD
        },
    }
    atomic_write_json(folder / EXPORT_RECORD, record)


def verify_export(folder: Path) -> None:
    """Refuse an export whose files changed since `hone export` wrote them (damaged, or tampered with: a
    swapped weights or config file is code or a different model), naming the first such file."""
    record_path = folder / EXPORT_RECORD
    if not record_path.is_file():
        raise HoneError(f"{record_path}: missing; only a folder written by hone export is read back")
    hashes = read_json_object(record_path).get("sha256")
    if not isinstance(hashes, dict) or not hashes:
        raise HoneError(f"{record_path}: records no sha256 of the exported files; export again")
    for name, expected in sorted(hashes.items()):
        file = folder / str(name)
        if not file.is_file():
            raise HoneError(f"{file}: missing from the export ({EXPORT_RECORD} lists it); export again")
        if file_digest(file) != expected:
            raise HoneError(
                f"{file}: changed since hone export wrote it (its sha256 is not the one {EXPORT_RECORD} "
                "records); refused rather than loaded. Export again"
            )


def record_artifact(run: FinishedRun, name: str, folder: Path) -> None:
    """Exports inside the run folder are recorded relative to it, others by their full path."""
    try:
        relative = str(folder.resolve().relative_to(run.path.resolve()))
    except ValueError:
        relative = str(folder.resolve())
    RunFolder(run.path).update(artifacts={name: relative})


def non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """`name: N of M values are NaN or infinite` for the first floating-point tensor that has any."""
    for name, tensor in tensors:
        if not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            return f"{name}: {bad} of {tensor.numel()} values are NaN or infinite"
    return None


def saved_tensors(folder: Path) -> Iterator[tuple[Path, str, torch.Tensor]]:
    """(file, tensor name, tensor) of every safetensors file in a weights folder, one tensor at a time."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as opened:
            for name in opened.keys():  # noqa: SIM118 (safe_open is not a mapping)
                yield file, name, opened.get_tensor(name)


def require_finite_files(folder: Path) -> None:
    """Refuse trained weights with NaN or infinite values: a diverged run exported is a model that
    answers nothing, and nothing downstream (GGUF, Ollama) would say why."""
    for file, name, tensor in saved_tensors(folder):
        problem = non_finite([(name, tensor)])
        if problem:
            raise HoneError(
                f"{file}: tensor {problem}; the run diverged (retrain with a lower train.learning_rate)"
            )


def require_finite_model(model: Any, base: Path) -> None:
    """The merged weights, for what the adapter's own check cannot see: a base that is not finite, or
    a merge that overflows."""
    problem = non_finite(model.state_dict().items())
    if problem:
        raise HoneError(f"{base}: merged with the adapter, tensor {problem}; nothing was exported")


def merge(run_path: Path, out: Path | None = None, dequantize: bool = False, record: bool = True) -> Path:
    """Write the run's model as one plain safetensors folder that any Hugging Face tool loads.

    LoRA is merged into the fp32 base it was trained on. A QLoRA adapter is refused unless `dequantize`
    is set (see QLORA_REFUSAL). Full fine-tuning already produced a whole model; it is copied. Weights
    with NaN or infinite values are refused before anything is written. `record=False` leaves the run's
    manifest alone (a registered version's files are hashed and must not change).
    """
    run = open_language_model_run(run_path, "export")
    target = out or run.path / "export" / "merged"
    if run.kind == "qlora" and not dequantize:
        raise HoneError(QLORA_REFUSAL.format(run=run_path))
    dequantized = run.kind == "qlora"
    check_weights(run.weights)  # a truncated or damaged file is named before any tensor is read
    require_finite_files(run.weights)
    model = None if run.kind == "full" else merged_model(run, dequantized, run.config.model)
    if model is not None:
        require_finite_model(model, run.base)
    with staged_folder(target) as staging:
        if model is None:
            shutil.copytree(run.weights, staging, dirs_exist_ok=True)
        else:
            model.save_pretrained(staging, safe_serialization=True)
            load_tokenizer(run.weights, run.config.model).save_pretrained(staging)  # with its chat template
        record_export(staging, run, "merged", dequantized=dequantized, dtype="float32")
    if record:
        record_artifact(run, "export_merged", target)
    return target
