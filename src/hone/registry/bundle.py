"""A registered version's files: a frozen, content-hashed copy of a completed training run.

    <version>/
      manifest.json, config.yaml, metrics.json, history.jsonl   the run's record, as training wrote it
      adapter/ or model/                                         the weights
      dataset/card.json              when the train split came from a `hone data prepare` version folder
      evaluations/<ladder run>/      every ladder that evaluated the run: manifest, ladder.json, eval/

The copy is itself a run folder, so everything that takes a run folder (the ladder, export, serving) takes
a registered version too. Its content hash (sha256 over every file's path and sha256) is kept in the
version's tags and checked on every load: a tampered, truncated or missing file is refused by name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from hone import contract
from hone.contract import Manifest
from hone.errors import HoneError
from hone.export.ollama import run_system_prompt
from hone.io import file_digest
from hone.runs import LADDER, MANIFEST, METRICS, FinishedRun, RunFolder
from hone.track import code_version_text

RECORD_FILES = (MANIFEST, "config.yaml", METRICS, "history.jsonl")
EVALUATION_FILES = (MANIFEST, LADDER)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def folder_files(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`, in a stable order."""
    return {
        path.relative_to(folder).as_posix(): file_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def content_hash(files: dict[str, str]) -> str:
    """One sha256 over every (path, sha256) pair: a renamed, changed, added or missing file changes it."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]}\n".encode())
    return digest.hexdigest()


def verify_folder(folder: Path, expected_files: dict[str, str], expected_hash: str, label: str) -> None:
    """Refuse a version whose files differ from what was registered, naming each file that differs."""
    if not folder.is_dir():
        raise HoneError(f"{label}: its files are missing from the registry store ({folder})")
    found = folder_files(folder)
    if content_hash(found) == expected_hash:
        return
    problems = []
    for name, digest in expected_files.items():
        if name not in found:
            problems.append(f"{name} is missing")
        elif found[name] != digest:
            problems.append(f"{name} changed (sha256 {found[name][:12]}, registered {digest[:12]})")
    problems += [f"{name} was added" for name in found if name not in expected_files]
    shown = "; ".join(problems[:5]) or "the content hash differs"
    raise HoneError(
        f"{label}: the stored files do not match the registered content hash ({shown}); "
        f"the copy in {folder} was changed or damaged after registration: register the run again"
    )


def stage(run: FinishedRun, target: Path) -> list[str]:
    """Copy the run's record, weights, dataset card and evaluations into `target`; returns the evaluations."""
    for name in RECORD_FILES:
        if (run.path / name).is_file():
            shutil.copy2(run.path / name, target / name)
    shutil.copytree(run.weights, target / run.weights.relative_to(run.path))
    card = dataset_card(run.manifest)
    if card is not None:
        (target / "dataset").mkdir()
        shutil.copy2(card, target / "dataset" / "card.json")
    evaluations = []
    for evaluation in evaluations_of(run.path):
        destination = target / "evaluations" / evaluation.name
        destination.mkdir(parents=True)
        for name in EVALUATION_FILES:
            shutil.copy2(evaluation / name, destination / name)
        if (evaluation / "eval").is_dir():
            shutil.copytree(evaluation / "eval", destination / "eval")
        evaluations.append(evaluation.name)
    return evaluations


def dataset_card(manifest: Manifest) -> Path | None:
    """The card of the `hone data prepare` version folder the train split came from, when it did."""
    if manifest.dataset is None or "train" not in manifest.dataset.splits:
        return None
    card = Path(manifest.dataset.splits["train"].path).parent / "card.json"
    return card if card.is_file() else None


def evaluations_of(run_path: Path) -> list[Path]:
    """Completed evaluation runs beside this run that include it: its linked ladder and any `hone evaluate`
    run that named it as a candidate."""
    found: list[Path] = []
    own = RunFolder.open(run_path).evaluation_run()
    if own is not None and (own / LADDER).is_file():
        found.append(own.resolve())
    target = run_path.resolve()
    for folder in sorted(path.resolve() for path in run_path.parent.iterdir()):
        if folder in found or not (folder / LADDER).is_file() or not (folder / MANIFEST).is_file():
            continue
        try:
            manifest = contract.read(Manifest, folder / MANIFEST)
        except HoneError:
            continue  # a broken neighbour is not this run's lineage
        if manifest.kind != "evaluation" or manifest.status != "completed":
            continue
        named = [Path(candidate).resolve() for candidate in manifest.candidates or []]
        if manifest.evaluates:
            named.append((folder / manifest.evaluates).resolve())
        if target in named:
            found.append(folder)
    return found


def base_weights_hash(base: Path) -> str:
    """sha256 over the base model's weight files (not its config or tokenizer): which weights were tuned."""
    files = {
        path.relative_to(base).as_posix(): file_digest(path)
        for path in sorted(base.rglob("*"))
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES
    }
    if not files:
        raise HoneError(f"{base}: no weight files (*.safetensors, *.bin) in the base model folder")
    return content_hash(files)


def chat_template_hash(run: FinishedRun) -> str | None:
    """sha256 of the chat template the run's tokenizer renders prompts with (saved with the weights)."""
    for folder in (run.weights, run.base):
        jinja = folder / "chat_template.jinja"
        if jinja.is_file():
            return hashlib.sha256(jinja.read_bytes()).hexdigest()
        settings = folder / "tokenizer_config.json"
        if settings.is_file():
            template = json.loads(settings.read_text(encoding="utf-8")).get("chat_template")
            if isinstance(template, str):
                return hashlib.sha256(template.encode()).hexdigest()
    return None


def lineage_tags(
    run: FinishedRun, files: dict[str, str], evaluations: list[str], staged: Path
) -> dict[str, str]:
    """Everything a version came from, as MLflow version tags (`hone.*`), each a string."""
    manifest, config = run.manifest, run.config
    adapter = config.train.adapter.model_dump(mode="json")
    summaries = [evaluation_summary(staged / "evaluations" / name, run.name) for name in evaluations]
    card = staged / "dataset" / "card.json"
    tags: dict[str, Any] = {
        "hone.run_name": run.name,
        "hone.run_path": str(run.path.resolve()),
        "hone.method": run.method,
        "hone.adapter": run.kind,
        "hone.weights": run.weights.relative_to(run.path).as_posix(),
        "hone.base_model": manifest.base_model.reference,
        "hone.base_model_sha256": base_weights_hash(run.base),
        "hone.adapter_settings": json.dumps(adapter, sort_keys=True),
        "hone.lora_rank": adapter.get("r"),
        "hone.chat_template_sha256": chat_template_hash(run),
        "hone.system_prompt": run_system_prompt(run).text or "",  # the one it was trained under
        "hone.dataset_hash": manifest.dataset.hash if manifest.dataset else None,
        "hone.dataset_splits": json.dumps(contract.to_json(manifest)["dataset"]["splits"])
        if manifest.dataset
        else None,
        "hone.dataset_card_version": json.loads(card.read_text(encoding="utf-8")).get("version")
        if card.is_file()
        else None,
        "hone.config": (staged / "config.yaml").read_text(encoding="utf-8"),
        "hone.code_version": code_version_text(manifest.code_version),
        "hone.training": json.dumps(contract.to_json(manifest.training)) if manifest.training else None,
        "hone.evaluations": json.dumps(summaries),
        "hone.metrics": json.dumps(manifest.metrics),
        "hone.files": json.dumps(files),
        "hone.sha256": content_hash(files),
    }
    return {key: str(value) for key, value in tags.items() if value is not None}


def evaluation_summary(folder: Path, rung: str) -> dict[str, Any]:
    """What a ladder said of this run: its rung's primary metric with interval, the split, the verdict."""
    ladder = contract.read(contract.Ladder, folder / LADDER)
    summary: dict[str, Any] = {
        "evaluation": folder.name,
        "test": ladder.task.test,
        "test_examples": ladder.task.examples,
        "test_hash": ladder.task.dataset_hash,
        "primary_metric": ladder.primary_metric,
        "recommendation": ladder.recommendation.rung,
    }
    mine = [r for r in ladder.fine_tuned if r.name == rung]
    if mine:
        scores = mine[0].metrics[ladder.primary_metric]
        summary.update(value=scores.value, low=scores.low, high=scores.high)
    return summary
