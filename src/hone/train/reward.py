"""Reward models: one scalar score per conversation, trained so the chosen reply outscores the rejected one.

Built on TRL's RewardTrainer (the Bradley-Terry loss, -log sigmoid(score_chosen - score_rejected)) on the
same preference pairs as DPO. The model is the base with a one-output classification head, read at the
last token that is not the pad token. With SmolLM2's tokenizer the pad token is <|im_end|>, so that is the
newline after the reply's <|im_end|>; training (TRL's collator) and `score_texts` both pad on the right
with the tokenizer's pad token, so both read the same position. For lora/qlora the head is trained in
full next to the adapters: PEFT's SEQ_CLS task keeps it in `modules_to_save`, so it is saved with the
adapter. Validation reports TRL's `eval_accuracy` (the share of pairs whose chosen reply scores higher)
and `eval_margin`.

A finished run is loaded with `load_reward_model` and scores conversations with `score_texts`; the rl
method uses the two as its reward.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from hone.config import HoneConfig, ModelConfig
from hone.data.formats import Example
from hone.errors import HoneError
from hone.models.resolve import load_tokenizer, require_all_weights, resolve_model, weights_policy
from hone.runs import RunFolder, inside_run
from hone.train.dpo import preference_dataset, show_ranking
from hone.train.setup import TrainResult, build_model, callbacks, choose, fit, trainer_arguments


def train_reward(
    config: HoneConfig,
    model_path: Path,
    tokenizer: Any,
    train_examples: list[Example],
    validation_examples: list[Example],
    run: RunFolder,
    console: Console,
    resume: Path | None = None,
) -> TrainResult:
    from trl import RewardConfig, RewardTrainer

    setup = choose(config, console)
    validating = bool(validation_examples)
    args = RewardConfig(
        **trainer_arguments(config, run, setup, validating),
        include_num_input_tokens_seen="non_padding",
        max_length=config.model.max_length,
    )
    trainer = RewardTrainer(
        model=build_model(config, model_path, setup, head="score"),
        args=args,
        train_dataset=preference_dataset(train_examples),
        eval_dataset=preference_dataset(validation_examples) if validating else None,
        processing_class=tokenizer,
        callbacks=callbacks(config, console, validating, config.train.method),
    )
    if config.train.adapter.kind == "qlora":
        restore_head_dtype(trainer.model, setup.dtype)
    left_out = count_left_out(config, trainer, console, len(train_examples))
    result = fit(
        trainer, run, config.train.adapter.kind, resume, left_out, setup.attention, kernels=setup.cpu_kernels
    )
    show_ranking(console, trainer.state.log_history, "eval_accuracy", "eval_margin")
    return result


def restore_head_dtype(model: Any, dtype: torch.dtype) -> None:
    """Put the trainable score head back in the compute dtype.

    For a quantized base TRL casts every trainable weight to bf16 (the QLoRA paper's setting). LoRA layers
    cast their input to match, but the score head is a plain Linear that does not, so with fp32 compute
    (the CPU default) its forward fails on mixed dtypes.
    """
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and "modules_to_save" in name:
            parameter.data = parameter.data.to(dtype)


def count_left_out(config: HoneConfig, trainer: Any, console: Console, train_count: int) -> int:
    """How many training pairs TRL left out for being longer than `model.max_length`.

    A reward model reads its score at the last token, so a cut conversation would be scored without its
    end: long pairs are left out whatever the truncation policy (TRL's behaviour, kept on purpose).
    """
    limit = config.model.max_length
    left_out = train_count - len(trainer.train_dataset)
    if not len(trainer.train_dataset):
        raise HoneError(f"every training pair is longer than model.max_length ({limit} tokens); raise it")
    if trainer.eval_dataset is not None and not len(trainer.eval_dataset):
        raise HoneError(f"every validation pair is longer than model.max_length ({limit} tokens); raise it")
    if left_out:
        console.print(
            f"[yellow]{left_out} training pair(s) over {limit} tokens left out "
            "(a reward model scores the end of the reply)[/]"
        )
    return left_out


def load_reward_model(
    run_path: Path, device: str = "cpu", opt_in: ModelConfig | None = None
) -> tuple[Any, Any]:
    """The reward model of a completed `method: reward` run and its tokenizer, in eval mode, ready to score;
    `opt_in` is the config's model section: what it allows to load (hone.models.resolve.weights_policy).

    A LoRA/QLoRA adapter is merged into its full-precision base, so scoring is one plain forward pass.
    (A QLoRA adapter was trained against the 4-bit base, so its merged scores differ slightly from the
    ones seen in training; the ranking is what matters to a reward.)
    """
    from transformers import AutoModelForSequenceClassification

    manifest = RunFolder.open(run_path).manifest
    weights = manifest.artifacts.get("weights")
    if manifest.method != "reward" or manifest.status != "completed" or weights is None:
        raise HoneError(
            f"{run_path}: not a completed reward-model run (method {manifest.method!r}, "
            f"status {manifest.status!r}); train one with method: reward"
        )
    folder = inside_run(run_path, weights, "artifacts.weights")
    tokenizer = load_tokenizer(folder, opt_in)
    options = weights_policy(folder, opt_in)  # PEFT takes no such options for an adapter: the check counts
    if weights == "adapter":
        from peft import PeftModel

        base_path = Path(manifest.base_model.path or resolve_model(manifest.base_model.reference))
        with quiet_load_report():
            base, loading = AutoModelForSequenceClassification.from_pretrained(
                base_path,
                num_labels=1,
                dtype=torch.float32,
                output_loading_info=True,
                **weights_policy(base_path, opt_in),
            )
        require_all_weights(
            base_path, loading, new_heads=("score.",)
        )  # the score head comes with the adapter
        # The adapter brings the trained score head (PEFT's modules_to_save) along with the LoRA weights.
        model = PeftModel.from_pretrained(base, folder).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32, **options)
    # The score is read at the last token that is not the pad token, as in training.
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


@contextmanager
def quiet_load_report() -> Iterator[None]:
    """transformers reports the base's score head as newly initialised; the adapter brings the trained one."""
    report = logging.getLogger("transformers.modeling_utils")
    level = report.level
    report.setLevel(logging.ERROR)
    try:
        yield
    finally:
        report.setLevel(level)


def score_texts(
    model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], batch_size: int = 16
) -> list[float]:
    """One score per conversation (prompt turns plus the reply), higher for a better reply.

    Each conversation is rendered and padded exactly as the reward model saw its training pairs: the
    tokenizer's chat template, right padding with the tokenizer's pad token.
    """
    ids = [
        tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
        for conversation in conversations
    ]
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            inputs = right_padded(ids[start : start + batch_size], tokenizer.pad_token_id, model.device)
            scores.extend(model(**inputs).logits[:, 0].float().tolist())
    return scores


def right_padded(rows: list[list[int]], pad_token_id: int, device: Any) -> dict[str, torch.Tensor]:
    width = max(len(row) for row in rows)
    input_ids = [row + [pad_token_id] * (width - len(row)) for row in rows]
    attention_mask = [[1] * len(row) + [0] * (width - len(row)) for row in rows]
    return {
        "input_ids": torch.tensor(input_ids, device=device),
        "attention_mask": torch.tensor(attention_mask, device=device),
    }
