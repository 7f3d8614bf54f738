"""Reinforcement learning from a reward: GRPO or RLOO (TRL), as full fine-tuning, LoRA or QLoRA.

Each training chat becomes a prompt (the conversation without its final assistant answer) and a
reference (that answer). For every prompt the policy samples `rl.num_generations` completions; the
reward scores each one, and the policy moves towards the completions that scored above their group's
mean. The reward (`train.rl.reward`) is either

- `path/to/file.py:function`, called by TRL as `function(prompts, completions, reference, **kwargs)` and
  returning one float per completion. `prompts[i]` is a list of messages; `completions[i]` is a list
  holding the sampled assistant message, `[{"role": "assistant", "content": "..."}]`; `reference[i]` is
  the reference answer's text. TRL also passes `completion_ids` (the sampled token ids),
  `trainer_state` and more, so the function must take `**kwargs`. A reward of None skips a completion.
- the run folder of a reward model trained with `method: reward`: it scores each prompt plus
  completion as one conversation, the way it was trained to.

Batch sizes count completions, as in TRL: `train.batch_size * train.gradient_accumulation` completions
make one optimizer step and must be whole groups of `rl.num_generations`.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from hone.config import HoneConfig, LoraAdapter, ModelConfig
from hone.data.formats import Example
from hone.data.tokenize import prompt_messages
from hone.errors import HoneError
from hone.runs import MANIFEST, RunFolder
from hone.train.setup import (
    Setup,
    TrainResult,
    callbacks,
    choose,
    fit,
    load_base,
    lora_config,
    process_state,
    trainer_arguments,
)

logger = logging.getLogger(__name__)

RewardFunction = Callable[..., list[float | None]]


def load_reward(spec: str, device: str = "cpu", opt_in: ModelConfig | None = None) -> RewardFunction:
    """The reward as a TRL reward function, from `file.py:function` or a reward-model run folder (whose
    model is loaded onto `device`, as the config's model section `opt_in` allows)."""
    file, _, name = spec.rpartition(":")
    if file.endswith(".py") and name:
        return reward_from_file(Path(file), name, spec)
    folder = Path(spec)
    if (folder / MANIFEST).is_file():
        return reward_from_run(folder, device, opt_in)
    raise HoneError(
        f"train.rl.reward {spec!r}: expected 'path/to/file.py:function' or the run folder of a reward model "
        f"(method: reward); {folder} is not a run folder (no {MANIFEST})"
    )


def reward_from_file(path: Path, name: str, spec: str) -> RewardFunction:
    """Import the file as a module of its own and take the function from it."""
    if not path.is_file():
        raise HoneError(f"train.rl.reward {spec!r}: {path} not found")
    module_name = f"hone_reward_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise HoneError(f"train.rl.reward {spec!r}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look their module up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise HoneError(
            f"train.rl.reward {spec!r}: importing {path} failed: {type(exc).__name__}: {exc}"
        ) from exc
    function = getattr(module, name, None)
    if function is None:
        defined = [n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")]
        raise HoneError(f"train.rl.reward {spec!r}: {path} defines no {name!r} (its functions: {defined})")
    if not callable(function):
        raise HoneError(f"train.rl.reward {spec!r}: {name} is a {type(function).__name__}, not a function")
    check_signature(function, spec)
    return function


def check_signature(function: Callable[..., Any], spec: str) -> None:
    """Fail now rather than after the first batch has been generated: TRL calls with keywords only."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to check
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise HoneError(
            f"train.rl.reward {spec!r}: the function must accept **kwargs; TRL calls it as function("
            "prompts=..., completions=..., reference=..., completion_ids=..., trainer_state=..., ...)"
        )


def reward_from_run(folder: Path, device: str, opt_in: ModelConfig | None = None) -> RewardFunction:
    """A reward function that scores with the reward model of a completed `method: reward` run.

    hone wraps the model in a function instead of handing it to TRL as a reward model: TRL would render
    prompt and completion with its own template and padding, while `score_texts` renders them exactly as
    the reward model saw its training pairs.
    """
    manifest = RunFolder.open(folder).manifest
    if manifest.method != "reward":
        raise HoneError(
            f"train.rl.reward {str(folder)!r}: the run's method is {manifest.method!r}, not 'reward' "
            "(train a reward model with method: reward)"
        )
    if manifest.status != "completed":
        raise HoneError(
            f"train.rl.reward {str(folder)!r}: the reward-model run did not complete "
            f"(status {manifest.status!r})"
        )
    from hone.train.reward import load_reward_model, score_texts

    model, tokenizer = load_reward_model(folder, device, opt_in)

    def reward_model(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        conversations = [
            [*prompt, *completion] for prompt, completion in zip(prompts, completions, strict=True)
        ]
        return score_texts(model, tokenizer, conversations)

    return reward_model  # TRL logs it as rewards/reward_model/mean


def to_dataset(tokenizer: Any, examples: list[Example], longest_prompt: int) -> tuple[Any, int]:
    """A conversational `prompt` column plus the `reference` answer (passed to the reward by name), and
    how many prompts were left out for being longer than `longest_prompt` tokens.

    A prompt cannot be cut without changing the question, so a too-long one is left out, whatever the
    truncation policy; TRL itself would generate from the whole prompt past `model.max_length`.
    """
    from datasets import Dataset

    prompts, references = [], []
    for example in examples:
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt_messages(example.messages)]
        last = example.messages[-1]
        prompts.append(prompt)
        references.append(last["content"] if last["role"] == "assistant" else "")
    rendered = tokenizer.apply_chat_template(prompts, add_generation_prompt=True)["input_ids"]
    kept = [index for index, ids in enumerate(rendered) if len(ids) <= longest_prompt]
    columns = {"prompt": [prompts[i] for i in kept], "reference": [references[i] for i in kept]}
    return Dataset.from_dict(columns), len(examples) - len(kept)


def prompt_split(
    config: HoneConfig, tokenizer: Any, examples: list[Example], split: str, console: Console
) -> tuple[Any, int]:
    """One split as a dataset of the prompts that leave room for a whole completion in model.max_length
    (None for an empty split), and how many were left out."""
    if not examples:
        return None, 0
    longest = config.model.max_length - config.train.rl.max_new_tokens
    dataset, too_long = to_dataset(tokenizer, examples, longest)
    if too_long:
        console.print(
            f"[yellow]{too_long} {split} prompt(s) over {longest} tokens (model.max_length - "
            "train.rl.max_new_tokens) left out[/]"
        )
    if len(dataset) == 0:
        raise HoneError(
            f"no {split} prompt fits in model.max_length ({config.model.max_length}) minus "
            f"train.rl.max_new_tokens ({config.train.rl.max_new_tokens}); raise model.max_length"
        )
    return dataset, too_long


def check_batch(config: HoneConfig, processes: int) -> None:
    """TRL's rule, in the config's words: an optimizer step holds whole groups of completions."""
    train, generations = config.train, config.train.rl.num_generations
    completions = train.batch_size * train.gradient_accumulation * processes
    if completions % generations:
        across = f" x {processes} processes" if processes > 1 else ""
        raise HoneError(
            f"train.batch_size ({train.batch_size}) x train.gradient_accumulation "
            f"({train.gradient_accumulation}){across} = {completions} completions per optimizer step, not a "
            f"multiple of train.rl.num_generations ({generations}): a prompt's completions are compared as a "
            f"group. Set train.batch_size to a multiple of {generations}, or change train.rl.num_generations."
        )


def rl_arguments(config: HoneConfig, run: RunFolder, setup: Setup, validating: bool) -> dict[str, Any]:
    """The shared TrainingArguments plus the sampling settings, with validation judged by reward.

    GRPO's and RLOO's eval loss is the policy-gradient objective on fresh samples: its advantages are
    centred on each group's mean, so it hovers around zero whatever the policy is worth. The mean reward
    of the validation prompts (`eval_reward`) is what gets better, so keep_best and early stopping
    compare that, higher being better.
    """
    rl = config.train.rl
    arguments = trainer_arguments(config, run, setup, validating)
    if validating:
        arguments["metric_for_best_model"] = "eval_reward"
        arguments["greater_is_better"] = True
        # TRL evaluates whole groups per batch; keep the shared "twice the training batch", in groups.
        groups = max(1, 2 * config.train.batch_size // rl.num_generations)
        arguments["per_device_eval_batch_size"] = groups * rl.num_generations
    return {
        **arguments,
        "num_generations": rl.num_generations,
        "max_completion_length": rl.max_new_tokens,
        "temperature": rl.temperature,
        "beta": rl.beta,
    }


def train_rl(
    config: HoneConfig,
    model_path: Path,
    tokenizer: Any,
    train_examples: list[Example],
    validation_examples: list[Example],
    run: RunFolder,
    console: Console,
    resume: Path | None = None,
) -> TrainResult:
    rl, adapter = config.train.rl, config.train.adapter
    check_batch(config, process_state().num_processes)
    setup = choose(config, console)
    reward = load_reward(rl.reward or "", setup.device, config.model)  # a bad one fails before the policy
    train_set, too_long = prompt_split(config, tokenizer, train_examples, "training", console)
    eval_set = prompt_split(config, tokenizer, validation_examples, "validation", console)[0]
    # TRL wraps the adapter itself: with a KL penalty (rl.beta > 0) the reference policy is then the base
    # with the adapter switched off, where a ready PEFT model would get a copied "ref" adapter, saved too.
    quantized, trained = adapter.kind == "qlora", adapter.kind == "full"
    model = load_base(model_path, setup, quantized=quantized, trained=trained, opt_in=config.model)
    peft = lora_config(adapter, "CAUSAL_LM") if isinstance(adapter, LoraAdapter) else None
    trainer = make_trainer(config, model, peft, reward, tokenizer, train_set, eval_set, run, setup, console)
    return fit(trainer, run, adapter.kind, resume, too_long, setup.attention, kernels=setup.cpu_kernels)


def make_trainer(
    config: HoneConfig,
    model: Any,
    peft: Any,
    reward: RewardFunction,
    tokenizer: Any,
    train_set: Any,
    eval_set: Any,
    run: RunFolder,
    setup: Setup,
    console: Console,
) -> Any:
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    algorithm = config.train.rl.algorithm
    Config, Trainer = (GRPOConfig, GRPOTrainer) if algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    validating = eval_set is not None
    return Trainer(
        model=model,
        reward_funcs=reward,
        args=Config(**rl_arguments(config, run, setup, validating)),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=peft,
        callbacks=callbacks(config, console, validating, f"rl ({algorithm})"),
    )
