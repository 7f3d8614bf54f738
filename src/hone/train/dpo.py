"""Direct Preference Optimization (DPO): raise the chosen reply's likelihood over the rejected one's,
measured against a frozen reference model, with no reward model and no sampling.

Built on TRL's DPOTrainer, which renders prompt and replies with the tokenizer's own chat template and
puts the loss on the reply tokens only. The reference is the model as it was before training:

- lora / qlora: the same model with its adapter switched off, so no second copy is held. hone hands TRL
  the base model and the LoRA config rather than a ready PEFT model, because given a PEFT model TRL 1.16
  copies its adapter into a second, frozen "ref" adapter (meant for continuing an adapter that was
  already trained), which for a fresh adapter is only the base again, and would be saved with the run.
- full: a second, frozen copy of the base, loaded the same way as the policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from hone.config import HoneConfig, LoraAdapter
from hone.data.formats import Example
from hone.errors import HoneError
from hone.runs import RunFolder
from hone.train.setup import (
    Setup,
    TrainResult,
    callbacks,
    choose,
    fit,
    load_base,
    lora_config,
    trainer_arguments,
)


def turns(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Role and content only: a loss weight means nothing to a preference pair, and Arrow needs one schema."""
    return [{"role": message["role"], "content": message["content"]} for message in messages]


def preference_dataset(examples: list[Example]) -> Any:
    """TRL's conversational preference format: prompt turns, then the chosen and the rejected replies."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt": [turns(example.messages) for example in examples],
            "chosen": [turns(example.chosen or []) for example in examples],
            "rejected": [turns(example.rejected or []) for example in examples],
        }
    )


def check_truncation(config: HoneConfig) -> None:
    """Refuse a truncation policy DPO cannot honour before any model is loaded."""
    if config.model.truncation == "keep_end":
        raise HoneError(
            f"model.truncation: keep_end is not supported by method {config.train.method}; TRL cuts "
            "preference pairs at the end only. Use keep_start (cut the end of long replies) or drop "
            "(leave long pairs out)"
        )


def policy_and_reference(config: HoneConfig, model_path: Path, setup: Setup) -> tuple[Any, Any, Any]:
    """The model to train, its reference (None: the adapter switched off) and the LoRA config for TRL."""
    adapter = config.train.adapter
    quantized, trained = adapter.kind == "qlora", adapter.kind == "full"
    policy = load_base(model_path, setup, quantized=quantized, trained=trained, opt_in=config.model)
    if isinstance(adapter, LoraAdapter):
        return policy, None, lora_config(adapter, "CAUSAL_LM")
    reference = load_base(model_path, setup, quantized=False, opt_in=config.model)
    reference.requires_grad_(False)
    return policy, reference.eval(), None


def pair_length(row: dict[str, list[int]]) -> int:
    """Tokens in the longer of the two sequences (prompt plus chosen, prompt plus rejected)."""
    return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))


def apply_length_policy(dataset: Any, examples: int, max_length: int, policy: str) -> tuple[Any, int]:
    """The tokenised pairs under the truncation policy, and how many were over `max_length`.

    TRL has already left out pairs whose prompt alone fills `max_length` and cuts the others at the end
    when batching (keep_start); under `drop` hone leaves out every pair that would be cut.
    """
    too_long = examples - len(dataset) + sum(pair_length(row) > max_length for row in dataset)
    if policy == "drop":
        dataset = dataset.filter(lambda row: pair_length(row) <= max_length)
    return dataset, too_long


def show_ranking(console: Console, history: list[dict[str, Any]], accuracy_key: str, margin_key: str) -> None:
    """The last validation's share of pairs whose chosen reply was ranked first, and the mean margin.

    The loss alone says little to a person; "chosen first on 94% of held-out pairs" does.
    """
    accuracy, margin = latest(history, accuracy_key), latest(history, margin_key)
    if accuracy is not None and margin is not None:
        console.print(
            f"[bold]Validation pairs[/]: chosen ranked first {accuracy:.0%}, mean margin {margin:.3f}"
        )


def latest(history: list[dict[str, Any]], key: str) -> float | None:
    return next((float(record[key]) for record in reversed(history) if key in record), None)


def train_dpo(
    config: HoneConfig,
    model_path: Path,
    tokenizer: Any,
    train_examples: list[Example],
    validation_examples: list[Example],
    run: RunFolder,
    console: Console,
    resume: Path | None = None,
) -> TrainResult:
    from trl import DPOConfig, DPOTrainer

    check_truncation(config)
    setup = choose(config, console)
    validating = bool(validation_examples)
    args = DPOConfig(
        **trainer_arguments(config, run, setup, validating),
        include_num_input_tokens_seen="non_padding",
        beta=config.train.dpo.beta,
        loss_type=[config.train.dpo.loss_type],
        label_smoothing=config.train.dpo.label_smoothing,
        max_length=config.model.max_length,
    )
    policy, reference, peft_config = policy_and_reference(config, model_path, setup)
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=preference_dataset(train_examples),
        eval_dataset=preference_dataset(validation_examples) if validating else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks(config, console, validating, config.train.method),
    )
    truncated = prepare_lengths(config, trainer, console, len(train_examples), len(validation_examples))
    result = fit(
        trainer, run, config.train.adapter.kind, resume, truncated, setup.attention, kernels=setup.cpu_kernels
    )
    # TRL's implicit reward is beta * (policy - reference) log-probability of a reply.
    show_ranking(console, trainer.state.log_history, "eval_rewards/accuracies", "eval_rewards/margins")
    return result


def prepare_lengths(
    config: HoneConfig, trainer: Any, console: Console, train_count: int, eval_count: int
) -> int:
    """Apply the truncation policy to the pairs TRL tokenised; report and return how many were too long."""
    limit, policy = config.model.max_length, config.model.truncation
    trainer.train_dataset, truncated = apply_length_policy(trainer.train_dataset, train_count, limit, policy)
    if trainer.eval_dataset is not None:
        trainer.eval_dataset, _ = apply_length_policy(trainer.eval_dataset, eval_count, limit, policy)
    for split, dataset in (("training", trainer.train_dataset), ("validation", trainer.eval_dataset)):
        if dataset is not None and not len(dataset):
            raise HoneError(f"every {split} pair is longer than model.max_length ({limit} tokens); raise it")
    if truncated:
        console.print(f"[yellow]{truncated} training pair(s) over {limit} tokens ({policy})[/]")
    return truncated
