"""Reward models as full, LoRA and QLoRA: a few real steps on the tiny model through `hone train`'s
pipeline, every trainable parameter (the score head included) moves and is saved, the finished run loads
back as a scorer, and after training it ranks the chosen reply over the rejected one on held-out pairs."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from rich.console import Console
from toy_preferences import assert_saved_as_trained, completed_two_steps, preference_config

from hone.config import HoneConfig
from hone.errors import HoneError
from hone.models.resolve import load_tokenizer
from hone.runs import RunFolder
from hone.train import hardware, reward
from hone.train.pipeline import run_training
from hone.train.reward import load_reward_model, score_texts
from hone.train.setup import Setup, build_model

HELPFUL = (
    "Yes, I am happy to help with that order.",
    "Sure, I have fixed it for you.",
    "Of course, the refund is on its way.",
    "Done: your order ships today.",
)
UNHELPFUL = ("No. Figure it out yourself.", "Not my problem.", "Ask someone else.", "Whatever.")


@pytest.fixture
def snapshot(spy_on: Callable[[ModuleType], Any]) -> Any:
    return spy_on(reward)


def toy_pairs(count: int, first: int = 0) -> list[dict[str, Any]]:
    """Every prompt asks about another order; the chosen reply is one of a few helpful ones, the rejected
    one of a few unhelpful ones, drawn at random so no single reply decides the ranking."""
    rng = random.Random(first)
    return [
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Question {first + i}: can you help me with order {i * 7}?"},
            ],
            "chosen": [{"role": "assistant", "content": rng.choice(HELPFUL)}],
            "rejected": [{"role": "assistant", "content": rng.choice(UNHELPFUL)}],
        }
        for i in range(count)
    ]


def config_for(tmp_path: Path, model: Path, adapter: str, **settings: Any) -> HoneConfig:
    return preference_config(tmp_path, model, "reward", adapter, toy_pairs, **settings)


def saved_trainable(weights: Path, adapter: str, base: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The trainable parameters as saved, loaded back under the names they had in training."""
    from transformers import AutoModelForSequenceClassification

    if adapter == "full":
        loaded = AutoModelForSequenceClassification.from_pretrained(weights)
    else:
        from peft import PeftModel

        classifier = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        loaded = PeftModel.from_pretrained(classifier, weights)
    parameters = dict(loaded.named_parameters())
    return {name: parameters[name] for name in names}


def conversations(pair: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    return pair["prompt"] + pair["chosen"], pair["prompt"] + pair["rejected"]


def ranked_first(model: Any, tokenizer: Any, pairs: list[dict[str, Any]]) -> float:
    """The share of pairs whose chosen conversation scores higher than the rejected one."""
    chosen, rejected = zip(*(conversations(pair) for pair in pairs), strict=True)
    scores = score_texts(model, tokenizer, [*chosen, *rejected])
    return sum(a > b for a, b in zip(scores[: len(pairs)], scores[len(pairs) :], strict=True)) / len(pairs)


@pytest.mark.parametrize("adapter", ["full", "lora", "qlora"])
def test_reward_trains_every_parameter(
    tmp_path: Path, tiny_model_dir: Path, adapter: str, snapshot: Any
) -> None:
    run = run_training(config_for(tmp_path, tiny_model_dir, adapter), Console(record=True))

    records = completed_two_steps(run, adapter)
    assert any("eval_accuracy" in row for row in records), "pairwise accuracy on validation is logged"

    assert any("score" in name for name in snapshot.before), "the score head is trained"
    weights = run.path / run.manifest.artifacts["weights"]
    assert_saved_as_trained(snapshot, saved_trainable(weights, adapter, tiny_model_dir, list(snapshot.after)))

    model, tokenizer = load_reward_model(run.path)
    scores = score_texts(model, tokenizer, [*conversations(toy_pairs(1, first=77)[0])])
    assert len(scores) == 2 and all(math.isfinite(score) for score in scores)


def test_a_reward_model_ranks_chosen_over_rejected_after_training(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = config_for(tmp_path, tiny_model_dir, "lora", train=16, validation=4, max_steps=8, eval_every=8)
    held_out = toy_pairs(16, first=5000)
    cpu = {"device": "cpu", "precision": "fp32", "gradient checkpointing": False, "learning rate": 1e-2}
    cpu["attention"] = hardware.CPU_ATTENTION
    untrained = build_model(
        config, tiny_model_dir, Setup({k: hardware.Choice(v, "") for k, v in cpu.items()}), "score"
    )
    before = ranked_first(untrained.eval(), load_tokenizer(tiny_model_dir), held_out)

    run = run_training(config, Console(record=True))
    model, tokenizer = load_reward_model(run.path)
    after = ranked_first(model, tokenizer, held_out)
    assert after >= 0.9 and after > before, f"held-out pairs ranked chosen first: {before:.2f} -> {after:.2f}"


def test_scores_do_not_depend_on_the_batch(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Right padding must not move where the score is read: a conversation scores the same alone or in a
    batch with longer ones."""
    run = run_training(config_for(tmp_path, tiny_model_dir, "lora"), Console(record=True))
    model, tokenizer = load_reward_model(run.path)
    texts = [conversation for pair in toy_pairs(4, first=300) for conversation in conversations(pair)]
    together = score_texts(model, tokenizer, texts, batch_size=8)
    alone = [score_texts(model, tokenizer, [text])[0] for text in texts]
    assert together == pytest.approx(alone, abs=1e-4)


def test_load_reward_model_refuses_another_method(tmp_path: Path) -> None:
    config = HoneConfig.model_validate({"data": {"train": "t.jsonl"}, "run": {"dir": str(tmp_path)}})
    run = RunFolder.create(config, name="sft-run")
    run.update(method="sft", status="completed", artifacts={"weights": "adapter"})
    with pytest.raises(HoneError, match="not a completed reward-model run"):
        load_reward_model(run.path)
