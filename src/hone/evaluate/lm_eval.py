"""Run EleutherAI lm-evaluation-harness tasks on a model that is already loaded.

The harness is an optional extra (`pip install 'hone[lmeval]'`), imported only when a run asks for it.
Tasks are either the harness's own (named as in its task list; their data comes from the Hugging Face hub,
so they need network or a warm `datasets` cache) or local task YAML files in `include_path`. A local task
whose `dataset_kwargs.data_files` (or `dataset_path`) is a relative path is read relative to its YAML
file, not to the working directory, so a task folder can be moved and still run offline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hone.errors import HoneError

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'hone[lmeval]'"
# Standard errors of plain means are closed-form; the bootstrap is only for other aggregations.
BOOTSTRAP_ITERS = 1000


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    include_path: Path | None = None,
    limit: int | None = None,
    batch_size: int = 8,
) -> dict[str, dict[str, float]]:
    """Scores per task and metric, e.g. {"arc_easy": {"acc": 0.61, "acc_stderr": 0.01, ...}}.

    A metric computed under a filter other than the harness's default keeps the filter in its name
    ("exact_match,strict-match"). The harness seeds Python's, NumPy's and torch's random generators.
    """
    if not tasks:
        raise HoneError("lm_eval: no tasks given")
    simple_evaluate, huggingface_lm, task_manager_class, load_yaml = _import_harness()
    if include_path is not None and not include_path.is_dir():
        raise HoneError(f"{include_path}: lm_eval include_path is not a folder of task YAML files")
    manager = _task_manager(task_manager_class, tasks, include_path)
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        where = f" or in {include_path}" if include_path else ""
        raise HoneError(
            f"lm_eval task {unknown[0]!r} not found among the harness's tasks{where}; "
            "list them with `lm-eval ls tasks`"
        )
    specs = [_task_spec(manager, name, include_path, load_yaml) for name in tasks]
    logger.info("lm_eval: running %s (limit %s)", ", ".join(tasks), limit)
    harness_model = huggingface_lm(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        output = simple_evaluate(
            model=harness_model,
            tasks=specs,
            task_manager=manager,
            limit=limit,
            log_samples=False,
            bootstrap_iters=BOOTSTRAP_ITERS,
        )
    except OSError as exc:  # datasets' "not found" and connection errors are both OSErrors
        raise HoneError(
            f"lm_eval could not load the data for {', '.join(tasks)}: {exc}. Hub tasks need network access "
            "(or a warm datasets cache); local tasks need their data_files to exist."
        ) from None
    return scores_from_results(output["results"] if output else {})


def scores_from_results(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Keep the numeric "metric,filter" entries of the harness's results, dropping the default filter name."""
    scores: dict[str, dict[str, float]] = {}
    for task, entries in results.items():
        metrics: dict[str, float] = {}
        for key, value in entries.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # "alias", "sample_len", and "N/A" standard errors
            metric, _, filter_name = key.partition(",")
            metrics[metric if filter_name == "none" else key] = float(value)
        scores[task] = metrics
    return scores


def _import_harness() -> tuple[Any, Any, Any, Any]:
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:
        raise HoneError(f"lm_eval tasks need the lm-evaluation-harness: {INSTALL_HINT}") from None
    return simple_evaluate, HFLM, TaskManager, load_yaml


def _task_manager(task_manager_class: Any, tasks: list[str], include_path: Path | None) -> Any:
    """Index only the local folder when it holds every task: indexing the harness's own thousands of
    tasks takes several seconds and is needed only for hub tasks."""
    if include_path is not None:
        local = task_manager_class(include_path=str(include_path), include_defaults=False)
        if all(name in local.all_tasks for name in tasks):
            return local
        return task_manager_class(include_path=str(include_path))
    return task_manager_class()


def _task_spec(manager: Any, name: str, include_path: Path | None, load_yaml: Any) -> str | dict[str, Any]:
    """The task by name, or, for a local YAML task with relative data paths, its config with them resolved."""
    entry = manager.task_index.get(name)
    yaml_path = getattr(entry, "yaml_path", None)
    if include_path is None or yaml_path is None or getattr(entry.kind, "name", "") != "TASK":
        return name
    yaml_path = Path(yaml_path).resolve()
    if not yaml_path.is_relative_to(include_path.resolve()):
        return name
    config = load_yaml(yaml_path, resolve_func=True)
    resolved = resolve_data_paths(config, yaml_path.parent)
    return resolved if resolved != config else name


def resolve_data_paths(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of a task config whose relative data file paths point into `folder`."""
    config = dict(config)
    dataset_path = config.get("dataset_path")
    if (
        isinstance(dataset_path, str)
        and not Path(dataset_path).is_absolute()
        and (folder / dataset_path).exists()
    ):
        config["dataset_path"] = str(folder / dataset_path)
    kwargs = config.get("dataset_kwargs")
    if isinstance(kwargs, dict) and "data_files" in kwargs:
        config["dataset_kwargs"] = {**kwargs, "data_files": _absolute(kwargs["data_files"], folder)}
    return config


def _absolute(data_files: Any, folder: Path) -> Any:
    if isinstance(data_files, str):
        return (
            data_files if Path(data_files).is_absolute() or "://" in data_files else str(folder / data_files)
        )
    if isinstance(data_files, list):
        return [_absolute(item, folder) for item in data_files]
    if isinstance(data_files, dict):
        return {split: _absolute(files, folder) for split, files in data_files.items()}
    return data_files
