"""What `hone config validate` checks beyond the config's types: that everything the config names is there.

A config can be well typed and still point at a data file that was never written, a schema in another
folder or a model whose package is missing; each would otherwise surface only when the stage that reads
it starts, often after minutes of work. Nothing is loaded, converted or downloaded here: paths are looked
at, run manifests and weight headers read. Relative paths are read from the current folder, as every
command reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hone.config import REGISTRY_VERSION, HoneConfig, ModelConfig
from hone.errors import HoneError
from hone.models.resolve import cached_hub_model, reference_kind, weights_policy
from hone.models.trained import check_weights
from hone.runs import LANGUAGE_METHODS, MANIFEST, RunFolder


def check_config(config: HoneConfig, source: str) -> list[str]:
    """Notes on what only the network can settle; a HoneError listing every missing thing by its field."""
    problems: list[str] = []
    notes: list[str] = []

    def check(field: str, test: Callable[..., str | None], *arguments: Any) -> None:
        try:
            note = test(*arguments)
        except HoneError as exc:
            problems.append(f"{field}: {exc}")
        else:
            if note:
                notes.append(f"{field}: {note}")

    data, evaluate = config.data, config.evaluate
    if data.dataset is not None:
        check("data.dataset", existing, data.dataset, "dataset version folder", "folder")
    for split in ("train", "validation", "test"):
        if (path := getattr(data, split)) is not None:
            check(f"data.{split}", existing, path, "data")
    check("model.reference", model_reference, config.model.reference, config.model)
    if evaluate.json_schema is not None:
        check("evaluate.json_schema", existing, evaluate.json_schema, "JSON Schema", "file")
    if evaluate.rag.knowledge is not None:
        check("evaluate.rag.knowledge", existing, evaluate.rag.knowledge, "knowledge base")
    if evaluate.scorer is not None:
        check("evaluate.scorer", python_function, evaluate.scorer)
    if evaluate.general.lm_eval_include is not None:
        include = evaluate.general.lm_eval_include
        check("evaluate.general.lm_eval_include", existing, include, "task folder", "folder")
    for index, candidate in enumerate(evaluate.candidates):
        if not candidate.exists() and re.fullmatch(REGISTRY_VERSION, str(candidate)):
            notes.append(
                f"evaluate.candidates[{index}]: {candidate} is a registered version, checked when loaded"
            )
            continue
        check(f"evaluate.candidates[{index}]", finished_run, candidate, LANGUAGE_METHODS)
    if evaluate.judge is not None:
        check("evaluate.judge.model", judge_model, evaluate.judge.model, config.model)
    if config.train.rl.reward is not None:
        check("train.rl.reward", reward, config.train.rl.reward)
    if problems:
        raise HoneError(f"{source}: the config names what is not there\n  " + "\n  ".join(problems))
    return notes


def existing(path: Path, what: str, kind: str = "file or folder") -> None:
    if (path.is_dir() and kind != "file") or (path.is_file() and kind != "folder"):
        return
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    found = "is a folder" if path.is_dir() else "is a file" if path.exists() else "not found"
    raise HoneError(f"{path}: {what} {kind} {found}{where}")


def model_reference(reference: str, opt_in: ModelConfig | None = None) -> str | None:
    kind = reference_kind(reference)
    if kind == "folder":  # pickle weights or code of the model's own, unless the config opts in
        weights_policy(Path(reference).expanduser(), opt_in)
    if kind == "hub" and cached_hub_model(reference) is None:
        return (
            f"{reference!r} is not a local folder nor in the local hub cache; it is downloaded on first use"
        )
    return None


def python_function(spec: str) -> None:
    """`path/to/file.py:function`: the file is there (importing it would run its code)."""
    file, _, function = spec.rpartition(":")
    if not file or not function.isidentifier():
        raise HoneError(f"{spec!r}: expected 'path/to/file.py:function_name'")
    existing(Path(file), "Python", "file")


def finished_run(path: Path, methods: tuple[str, ...]) -> None:
    """A completed training run of one of `methods`, its weights' headers sound (its base is resolved when
    it is loaded)."""
    manifest = RunFolder.open(path).manifest
    if manifest.status != "completed":
        raise HoneError(f"{path}: run status is {manifest.status!r}; only a completed run can be used")
    if manifest.kind != "training" or "weights" not in manifest.artifacts:
        raise HoneError(f"{path}: a {manifest.kind} run holds no trained model")
    if manifest.method not in methods:
        raise HoneError(f"{path}: a {manifest.method} run; expected a run of method {' or '.join(methods)}")
    check_weights(path / manifest.artifacts["weights"])


def judge_model(model: str, opt_in: ModelConfig | None = None) -> str | None:
    if (Path(model) / MANIFEST).is_file():
        finished_run(Path(model), LANGUAGE_METHODS)
        return None
    return model_reference(model, opt_in)


def reward(spec: str) -> None:
    """A Python reward function (`file.py:function`) or a reward-model run folder, as method rl reads it."""
    file, _, function = spec.rpartition(":")
    if file.endswith(".py") and function:
        python_function(spec)
    elif (Path(spec) / MANIFEST).is_file():
        finished_run(Path(spec), ("reward",))
    else:
        raise HoneError(
            f"{spec!r}: expected 'path/to/file.py:function' or the run folder of a reward model; "
            f"{spec} is not a run folder (no {MANIFEST})"
        )
