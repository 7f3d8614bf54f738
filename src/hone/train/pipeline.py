"""`hone train`: check the data, make the run folder, train with the configured method, record it all.

`hone train --resume RUN` rebuilds the same run from its folder (the resolved config, the dataset hash)
and continues from its newest complete checkpoint. Under `accelerate launch` every process runs this;
only the main process writes the run folder, and the others learn its path from it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rich.console import Console

from hone import contract
from hone.config import HoneConfig, load_config
from hone.contract import DatasetRecord, SplitRecord, TrainingMetrics, TrainingSummary
from hone.data.formats import Example
from hone.data.load import load_split, require_kind
from hone.data.version import dataset_hash
from hone.errors import HoneError
from hone.models.resolve import load_tokenizer, resolve_model, weights_policy
from hone.runs import METRICS, RunFolder, failure_recorded
from hone.track import track_completed
from hone.train import hardware
from hone.train.checkpoints import latest_complete, remove_damaged, remove_incomplete
from hone.train.setup import TrainResult, check_loggers, process_state

logger = logging.getLogger(__name__)

# What each method trains on (see hone.data.formats.Example.kind).
METHOD_DATA = {"sft": "chat", "pretrain": "text", "dpo": "preference", "reward": "preference", "rl": "chat"}


def load_training_splits(config: HoneConfig) -> dict[str, list[Example]]:
    """Every split in the config, checked against what the method needs before any compute.

    The test split is not trained on, but it is part of the dataset version the run records.
    """
    data, method = config.data, config.train.method
    splits = {"train": load_split(data.train, data.system_prompt, data.format)}
    for name in ("validation", "test"):
        path = getattr(data, name)
        if path:
            splits[name] = load_split(path, data.system_prompt, data.format)
    for examples in splits.values():
        require_kind(examples, METHOD_DATA[method], method)
    if not splits["train"]:
        raise HoneError(f"{data.train}: no training examples")
    return splits


def train_method(
    config: HoneConfig,
    model_path: Path,
    tokenizer: Any,
    splits: dict[str, list[Example]],
    run: RunFolder,
    console: Console,
    resume: Path | None = None,
) -> TrainResult:
    """Dispatch to the method's module; each has the same signature."""
    method = config.train.method
    if method == "sft":
        from hone.train.sft import train_sft as train
    elif method == "pretrain":
        from hone.train.pretrain import train_pretrain as train
    elif method == "dpo":
        from hone.train.dpo import train_dpo as train
    elif method == "reward":
        from hone.train.reward import train_reward as train
    else:
        from hone.train.rl import train_rl as train
    validation = splits.get("validation", [])
    return train(config, model_path, tokenizer, splits["train"], validation, run, console, resume)


def run_training(config: HoneConfig, console: Console, track: bool = True) -> RunFolder:
    """A new run: its folder is created by the main process and shared with the others.

    `track=False` leaves MLflow to the caller, which adds to the run folder first (the quickstart's ladder).
    """
    state = process_state()  # joins the process group when launched by accelerate; a no-op otherwise
    check_loggers(config.train.report_to)
    hardware.attention_choice(config.train, str(hardware.device_choice().value))  # fails before any write
    splits = load_training_splits(config)
    version = dataset_hash(splits)
    with state.main_process_first():  # one process converts the model; the others find it cached
        model_path = resolve_model(config.model.reference)
    weights_policy(model_path, config.model)  # pickles, or code of the model's own: refused before a run
    run = shared_run_folder(config, state)
    with failure_recorded(run, record=state.is_main_process):  # from here on a failure is the run's
        if state.is_main_process:
            console.print(f"[bold]Run folder[/] {run.path}")
            run.update(
                base_model={"path": str(model_path)},
                dataset=dataset_record(config, splits, version),
                distributed={"processes": state.num_processes, "backend": state.backend},
            )
        result = execute(config, model_path, splits, run, console, resume=None)
    return finished(config, run, result, console, track)


def resume_training(run_path: Path, console: Console) -> RunFolder:
    """Continue a run that stopped (killed, crashed, out of time) from its newest complete checkpoint."""
    state = process_state()
    run = RunFolder.open(run_path)
    manifest = run.manifest
    if manifest.status == "completed":
        raise HoneError(f"{run_path}: the run already completed; nothing to resume")
    config = load_config(run_path / "config.yaml")
    splits = load_training_splits(config)
    recorded = manifest.dataset.hash if manifest.dataset else None
    version = dataset_hash(splits)
    if recorded and recorded != version:
        raise HoneError(
            f"{run_path}: the training data changed since the run started (dataset hash {version[:12]}, "
            f"run recorded {recorded[:12]}); resuming would not reproduce the run"
        )
    model_path = resolve_model(config.model.reference)
    if state.is_main_process:
        for path in remove_incomplete(run_path):
            console.print(f"[yellow]removed {path.name}: it was being written when the run stopped[/]")
        for path, reason in remove_damaged(run_path):
            logger.warning("%s: %s; removed, resuming from an older checkpoint", path, reason)
            console.print(f"[yellow]skipped and removed {path.name}: {reason}[/]")
    state.wait_for_everyone()
    checkpoint = latest_complete(run_path)
    if checkpoint is None:
        console.print("[yellow]no complete checkpoint yet: training again from the first step[/]")
    else:
        console.print(f"[bold]Resuming[/] {run.path.name} from {checkpoint.name}")
    with failure_recorded(run, record=state.is_main_process):
        if state.is_main_process:  # a failed run's error belongs to the attempt that failed
            resumed_from = checkpoint.name if checkpoint else None
            run.update(status="running", resumed_from=resumed_from, error=None, finished_at=None)
        result = execute(config, model_path, splits, run, console, resume=checkpoint)
    return finished(config, run, result, console, track=True)


def execute(
    config: HoneConfig,
    model_path: Path,
    splits: dict[str, list[Example]],
    run: RunFolder,
    console: Console,
    resume: Path | None,
) -> TrainResult:
    """Train, and on the main process write the training summary and mark the run completed."""
    state = process_state()
    tokenizer = load_tokenizer(model_path, config.model)
    result = train_method(config, model_path, tokenizer, splits, run, console, resume)
    if state.is_main_process:
        summary = training_summary(result)
        contract.write(TrainingMetrics(training=summary), run.path / METRICS)
        run.update(training=summary, artifacts={"metrics": METRICS})
        run.finish("completed")
    return result


def finished(
    config: HoneConfig, run: RunFolder, result: TrainResult, console: Console, track: bool
) -> RunFolder:
    """Track and sum up a run marked completed: nothing here can change its status."""
    if not process_state().is_main_process:
        return run
    if track and config.track.enabled:
        track_completed(run, config, console)
    best = "".join(f", best {name} {value:.4f}" for name, value in (result.best_metric or {}).items())
    console.print(
        f"[bold green]Done[/]: {result.steps} steps, train loss {fmt(result.train_loss)}, "
        f"validation loss {fmt(result.eval_loss)}{best}. Run folder: {run.path}"
    )
    return run


def shared_run_folder(config: HoneConfig, state: Any) -> RunFolder:
    """The main process creates the folder; its path is broadcast so every process writes to the same."""
    from accelerate.utils import broadcast_object_list

    paths = [str(RunFolder.create(config).path) if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(paths)
    return RunFolder(Path(paths[0]))  # type: ignore[arg-type]


def dataset_record(config: HoneConfig, splits: dict[str, list[Example]], version: str) -> DatasetRecord:
    return DatasetRecord(
        hash=version,
        splits={
            name: SplitRecord(path=str(getattr(config.data, name)), examples=len(examples))
            for name, examples in splits.items()
        },
    )


def training_summary(result: TrainResult) -> TrainingSummary:
    return TrainingSummary(
        steps=result.steps,
        train_loss=result.train_loss,
        eval_loss=result.eval_loss,
        best_step=result.best_step,
        best_metric=result.best_metric,
        seconds=round(result.seconds, 1),
        trained_tokens=result.trained_tokens,
        tokens_per_second=round(result.trained_tokens / result.seconds, 1) if result.seconds else None,
        truncated_examples=result.truncated,
        distributed=result.distributed,
        precision=result.precision,
        attention=result.attention,
        layout=result.layout,
        cpu_kernels=result.cpu_kernels,
    )


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
