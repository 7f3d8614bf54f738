"""What every method shares: hardware choices, the model with its adapter, the Trainer arguments that
make checkpoints resumable and validation useful, and the end of training (history, weights on disk).

Each method module (sft, pretrain, dpo, reward, rl) builds its dataset and its TRL trainer, and hands
the rest to these functions, so a fix to checkpointing or early stopping reaches every method at once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console

from hone.config import HoneConfig, LoraAdapter, ModelConfig
from hone.errors import HoneError
from hone.io import atomic_write_jsonl
from hone.models.quantization import quantization_config
from hone.models.resolve import load_model, require_all_weights, torch_dtype, unloadable, weights_policy
from hone.runs import RunFolder
from hone.train import hardware
from hone.train.checkpoints import CHECKPOINTS, MarkComplete
from hone.train.cpu import cpu_kernels
from hone.train.cpu.attention import NAME as CPU_ATTENTION_NAME
from hone.train.finite import StopOnNonFinite
from hone.train.progress import RichProgress

Head = Literal["causal", "score"]


@dataclass
class TrainResult:
    model: Any  # the trained model (a PEFT model for adapters), ready for evaluation
    steps: int
    train_loss: float | None
    eval_loss: float | None
    seconds: float
    trained_tokens: int
    truncated: int
    best_step: int | None = None
    distributed: str = "NO"  # accelerate's distributed type: NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED
    precision: str = "fp32"  # what training computed in; export dequantizes a 4-bit base to it
    attention: str = "sdpa"  # the attention kernel training ran (transformers' name, or hone's)
    layout: str = "padded"  # how a step's examples were laid out: padded, padding-free or packed
    best_metric: dict[str, float] | None = None  # {name: value} that chose the kept checkpoint
    cpu_kernels: list[str] = field(default_factory=list)  # hone's CPU kernels that ran (hone.train.cpu)


@dataclass
class Setup:
    """The hardware-dependent choices of one run, made once and printed with their reasons."""

    choices: dict[str, hardware.Choice]

    @property
    def device(self) -> str:
        return str(self.choices["device"].value)

    @property
    def precision(self) -> str:
        return str(self.choices["precision"].value)

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.precision)

    @property
    def attention(self) -> str:
        """The attention kernel: transformers' name, or hardware.CPU_ATTENTION (hone's, applied by `fit`)."""
        return str(self.choices["attention"].value)

    @property
    def cpu_kernels(self) -> list[str]:
        """hone's CPU kernels to try while training (hone.train.cpu); none where the choice was not made."""
        choice = self.choices.get("cpu kernels")
        return list(choice.value) if choice and isinstance(choice.value, list) else []

    @property
    def padding_free(self) -> bool:
        choice = self.choices.get("padding-free batches")
        return bool(choice and choice.value)

    @property
    def checkpointing(self) -> bool:
        return bool(self.choices["gradient checkpointing"].value)

    @property
    def learning_rate(self) -> float:
        return float(self.choices["learning rate"].value)


def process_state() -> Any:
    """accelerate's view of this process: its rank among the processes `accelerate launch` started.

    Made before the Trainer's own, so on CPU it must say `cpu=True` itself, or two launched processes
    each believe they are alone instead of joining one gloo process group.
    """
    from accelerate import PartialState

    cpu = not torch.cuda.is_available()
    for engine in ("FSDP", "DEEPSPEED"):
        if cpu and os.environ.get(f"ACCELERATE_USE_{engine}", "").lower() == "true":
            raise HoneError(
                f"the accelerate config asks for {engine}, which needs CUDA GPUs and none is available; "
                "on CPU launch with configs/accelerate/ddp.yaml (data parallel over gloo)"
            )
    return PartialState(cpu=cpu)


def choose(config: HoneConfig, console: Console) -> Setup:
    """Make the hardware choices (printed with reasons) and seed everything that comes after."""
    from transformers import set_seed

    train = config.train
    set_seed(train.seed)  # adapter and head initialisation, also where TRL builds the adapter itself
    device = hardware.device_choice()
    attention = hardware.attention_choice(train, str(device.value))
    setup = Setup(
        {
            "device": device,
            "precision": hardware.precision_choice(train, device.value),
            "gradient checkpointing": hardware.checkpointing_choice(train, device.value),
            "attention": attention,
            "padding-free batches": hardware.padding_free_choice(train, device.value, attention.value),
            "cpu kernels": hardware.cpu_kernels_choice(train, str(device.value), str(attention.value)),
            "learning rate": hardware.learning_rate_choice(train),
        }
    )
    if process_state().is_main_process:
        console.print("[bold]Training choices[/]")
        for name, choice in setup.choices.items():
            shown = (", ".join(choice.value) or "none") if isinstance(choice.value, list) else choice.value
            console.print(f"  [cyan]{name}[/]: {shown}  [dim]({choice.reason})[/]")
    return setup


def lora_config(adapter: LoraAdapter, task_type: str) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=adapter.target_modules,
        use_dora=adapter.use_dora,
        use_rslora=adapter.use_rslora,
        task_type=task_type,
    )


def load_base(
    model_path: Path,
    setup: Setup,
    quantized: bool,
    head: Head = "causal",
    trained: bool = False,
    opt_in: ModelConfig | None = None,
) -> Any:
    """The base model: a causal LM, or a sequence classifier with one scalar output for reward models.
    `opt_in` is the config's model section: what it allows to load (see hone.models.resolve.weights_policy).

    A frozen base (under adapters, or a reference model) loads in the compute precision. Weights that
    are `trained` (full fine-tuning) stay fp32 and autocast computes in bf16/fp16: AdamW's steps at
    full fine-tuning learning rates are smaller than bf16's resolution near 1.0 (2^-7), so pure bf16
    weights such as the norms' would not move at all.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    dtype = torch.float32 if trained else setup.dtype
    attention = None if setup.attention == hardware.CPU_ATTENTION else setup.attention
    if head == "causal" and not quantized:
        return load_model(model_path, dtype=dtype, device=setup.device, attention=attention, opt_in=opt_in)
    options = weights_policy(model_path, opt_in)
    options.update(dtype=dtype, device_map=setup.device, output_loading_info=True)
    if attention:
        options["attn_implementation"] = attention
    if quantized:
        options["quantization_config"] = quantization_config(setup.dtype)
    with unloadable(model_path):
        if head == "causal":
            model, loading = AutoModelForCausalLM.from_pretrained(model_path, **options)
        else:
            model, loading = AutoModelForSequenceClassification.from_pretrained(
                model_path, num_labels=1, **options
            )
    require_all_weights(model_path, loading, new_heads=("score.",))  # the reward head starts untrained
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=setup.checkpointing)
    return model


def build_model(config: HoneConfig, model_path: Path, setup: Setup, head: Head = "causal") -> Any:
    """The base with the configured adapter: a PEFT model for lora/qlora, the model itself for full."""
    from transformers import set_seed

    adapter = config.train.adapter
    set_seed(config.train.seed)  # adapter (and score head) initialisation is part of what the seed fixes
    model = load_base(
        model_path, setup, adapter.kind == "qlora", head, trained=adapter.kind == "full", opt_in=config.model
    )
    if head == "score" and model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id  # the classifier reads the last real token
    if not isinstance(adapter, LoraAdapter):
        return model
    from peft import get_peft_model

    return get_peft_model(model, lora_config(adapter, "CAUSAL_LM" if head == "causal" else "SEQ_CLS"))


def trainer_arguments(config: HoneConfig, run: RunFolder, setup: Setup, validating: bool) -> dict[str, Any]:
    """TrainingArguments every method shares: schedule, precision, validation, checkpoints, logging.

    Checkpoints are written at every validation (or every `save_every` steps), so `--resume` always has
    a recent one, and with `keep_best` the best validation step is among them.
    """
    train = config.train
    evaluation = "steps" if validating and train.eval_every else "epoch" if validating else "no"
    if train.save_every:
        saving, save_steps = "steps", train.save_every
    elif evaluation == "steps":
        saving, save_steps = "steps", train.eval_every
    else:
        saving, save_steps = "epoch", None
    keep_best = validating and train.keep_best
    if saving == "steps" and evaluation == "epoch" and (keep_best or train.early_stopping_patience):
        raise HoneError(
            f"train.save_every {train.save_every} with a validation split needs train.eval_every (validation "
            "once per epoch cannot choose among step checkpoints): set train.eval_every to a divisor of "
            "save_every, or train.keep_best: false"
        )
    return {
        "output_dir": str(run.path / CHECKPOINTS),
        "per_device_train_batch_size": train.batch_size,
        "per_device_eval_batch_size": train.batch_size * 2,
        "gradient_accumulation_steps": train.gradient_accumulation,
        "learning_rate": setup.learning_rate,
        "lr_scheduler_type": train.scheduler,
        "warmup_steps": train.warmup_ratio,  # a value below 1 is a fraction of all steps
        "weight_decay": train.weight_decay,
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps or -1,
        "bf16": setup.precision == "bf16",
        "fp16": setup.precision == "fp16",
        "gradient_checkpointing": setup.checkpointing,
        "logging_steps": train.logging_steps,
        "logging_nan_inf_filter": False,  # log a NaN loss as NaN (StopOnNonFinite), not as the running mean
        "eval_strategy": evaluation,
        "eval_steps": train.eval_every if evaluation == "steps" else None,
        "save_strategy": saving,
        "save_steps": save_steps,
        "save_total_limit": train.keep_checkpoints,
        "load_best_model_at_end": keep_best or bool(train.early_stopping_patience and validating),
        "metric_for_best_model": "eval_loss" if validating else None,
        "greater_is_better": False if validating else None,
        "report_to": live_loggers(config, run),
        "seed": train.seed,
        "data_seed": train.seed,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False,  # every trainable weight is used in each step
        "use_cpu": setup.device == "cpu",
    }


def check_loggers(names: list[str]) -> None:
    """Every `train.report_to` name is a transformers integration that is installed."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            known = ", ".join(INTEGRATION_TO_CALLBACK)
            raise HoneError(f"train.report_to: unknown logger {name!r}; expected one of {known}")
        if name not in get_available_reporting_integrations():
            raise HoneError(f"train.report_to: {name} is not installed (pip install {name})")


def live_loggers(config: HoneConfig, run: RunFolder) -> list[str] | str:
    """`train.report_to` handed to transformers' integrations.

    hone logs every finished run to MLflow itself (hone.track); these are extra loggers that watch the
    run live. TensorBoard event files go into the run folder, next to everything else about the run.
    """
    names = config.train.report_to
    check_loggers(names)
    if "tensorboard" in names:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.path / "tensorboard")
    return list(names) or "none"


def callbacks(config: HoneConfig, console: Console, validating: bool, description: str) -> list[Any]:
    """The progress bar (which also records the loss history), checkpoint marks, the stop on a NaN or
    infinite loss, and early stopping."""
    from transformers import EarlyStoppingCallback

    found: list[Any] = [RichProgress(console, description), MarkComplete(), StopOnNonFinite()]
    if validating and config.train.early_stopping_patience:
        found.append(EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping_patience))
    return found


def fit(
    trainer: Any,
    run: RunFolder,
    adapter_kind: str,
    resume: Path | None,
    truncated: int = 0,
    attention: str = hardware.CPU_ATTENTION,
    layout: str = "padded",
    kernels: Sequence[str] = (),
) -> TrainResult:
    """Train (from a checkpoint when resuming), then write the loss history and the final weights.

    `kernels` are the setup's CPU kernels (hone.train.cpu), applied on CPU for the length of training
    only; hone's attention among them only when `attention`, the setup's choice, is hardware.CPU_ATTENTION
    (a kernel named in the config stays as loaded). `layout` is recorded as given."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for default_display in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(default_display)
    progress = next(c for c in trainer.callback_handler.callbacks if isinstance(c, RichProgress))
    loaded = trainer.model.config._attn_implementation
    own = attention == hardware.CPU_ATTENTION
    wanted = [name for name in kernels if own or name != "attention"] if trainer.args.use_cpu else []
    with cpu_kernels(trainer.model, wanted) as applied:
        try:
            output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        finally:
            progress.close()  # a failed run leaves no live bar behind its error
    used = CPU_ATTENTION_NAME if "attention" in applied else loaded
    state = trainer.state
    best_is_loss = trainer.args.metric_for_best_model == "eval_loss"  # rl keeps the best eval_reward
    eval_loss = state.best_metric if trainer.args.load_best_model_at_end and best_is_loss else None
    if eval_loss is None:
        eval_loss = last_logged(progress.history, "eval_loss", state.global_step)
    if eval_loss is None and trainer.eval_dataset is not None:
        eval_loss = trainer.evaluate().get("eval_loss")
    save_trained(trainer, run, adapter_kind)
    if trainer.args.should_save:
        atomic_write_jsonl(run.path / "history.jsonl", progress.history)
    losses = [h["loss"] for h in progress.history if "loss" in h]
    return TrainResult(
        model=trainer.model,
        steps=state.global_step,
        train_loss=losses[-1] if losses else output.training_loss,
        eval_loss=eval_loss,
        seconds=progress.train_seconds,
        trained_tokens=int(state.num_input_tokens_seen or 0),
        truncated=truncated,
        best_step=state.best_global_step if trainer.args.load_best_model_at_end else None,
        distributed=str(trainer.accelerator.distributed_type.value),
        precision="bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        attention=str(used),
        layout=layout,
        cpu_kernels=applied,
        best_metric={str(trainer.args.metric_for_best_model): float(state.best_metric)}
        if trainer.args.load_best_model_at_end and state.best_metric is not None
        else None,
    )


def last_logged(history: list[dict[str, Any]], key: str, step: int) -> float | None:
    """A value already logged at the last step, so validation is not run twice."""
    for record in reversed(history):
        if record.get("step") == step and key in record:
            return float(record[key])
    return None


def save_trained(trainer: Any, run: RunFolder, adapter_kind: str) -> None:
    """Adapter weights (or the full model) plus the tokenizer, recorded in the manifest.

    Every process takes part (FSDP and ZeRO-3 gather the shards to save them); the main process then
    moves the finished folder into place, so a crash mid-save never leaves a folder that looks complete.
    """
    folder = "model" if adapter_kind == "full" else "adapter"
    staging = run.path / f".tmp-{folder}"
    if trainer.args.should_save:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))  # also saves the tokenizer (the trainer's processing class)
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        shutil.rmtree(run.path / folder, ignore_errors=True)
        os.replace(staging, run.path / folder)
        run.update(artifacts={"weights": folder, "history": "history.jsonl"})
