"""DPO as full, LoRA and QLoRA: a few real steps on the tiny model through `hone train`'s pipeline, every
trainable parameter moves and is saved (TRL's test pattern), and on a toy preference set the implicit
reward learns to rank the chosen reply first."""

from __future__ import annotations

import json
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
from hone.train import dpo
from hone.train.pipeline import run_training


@pytest.fixture
def snapshot(spy_on: Callable[[ModuleType], Any]) -> Any:
    return spy_on(dpo)


def toy_pairs(count: int, first: int = 0) -> list[dict[str, Any]]:
    """Every prompt asks about another order; the chosen reply is always one polite sentence, the rejected
    one always another. A one-line system prompt keeps the sequences short (and the default one out)."""
    return [
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Question {first + i}: can you help me with order {i * 7}?"},
            ],
            "chosen": [{"role": "assistant", "content": "Yes, I am happy to help with that order."}],
            "rejected": [{"role": "assistant", "content": "No. Figure it out yourself."}],
        }
        for i in range(count)
    ]


def config_for(tmp_path: Path, model: Path, adapter: str, **settings: Any) -> HoneConfig:
    return preference_config(tmp_path, model, "dpo", adapter, toy_pairs, **settings)


def history(run_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_path / "history.jsonl").read_text().splitlines()]


def saved_trainable(weights: Path, adapter: str, base: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The trainable parameters as saved, loaded back under the names they had in training."""
    from transformers import AutoModelForCausalLM

    if adapter == "full":
        loaded = AutoModelForCausalLM.from_pretrained(weights)
    else:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), weights)
    parameters = dict(loaded.named_parameters())
    return {name: parameters[name] for name in names}


@pytest.mark.parametrize("adapter", ["full", "lora", "qlora"])
def test_dpo_trains_every_parameter(
    tmp_path: Path, tiny_model_dir: Path, adapter: str, snapshot: Any
) -> None:
    run = run_training(config_for(tmp_path, tiny_model_dir, adapter), Console(record=True))

    records = completed_two_steps(run, adapter)
    assert any("eval_rewards/accuracies" in row for row in records)

    assert snapshot.before, "something was trainable"
    weights = run.path / run.manifest.artifacts["weights"]
    assert_saved_as_trained(snapshot, saved_trainable(weights, adapter, tiny_model_dir, list(snapshot.after)))
    if adapter != "full":
        assert not (weights / "ref").exists(), "the reference is the base with the adapter off, not a copy"


def test_dpo_reward_accuracy_rises_on_a_toy_preference_set(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = config_for(tmp_path, tiny_model_dir, "lora", train=12, validation=4, max_steps=6, eval_every=3)
    run = run_training(config, Console(record=True))

    records = history(run.path)
    start = next(row for row in records if "rewards/margins" in row)
    # On the first step the policy is the reference (LoRA B starts at zero): every implicit reward is 0.
    assert start["step"] == 1 and start["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert start["rewards/accuracies"] == 0.0
    evaluations = [row for row in records if "eval_rewards/margins" in row]
    assert [row["step"] for row in evaluations] == [3, 6]
    middle, end = evaluations
    assert end["eval_rewards/margins"] > middle["eval_rewards/margins"] > start["rewards/margins"]
    assert end["eval_rewards/accuracies"] >= 0.9 > start["rewards/accuracies"]


def test_dpo_refuses_keep_end_truncation(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = config_for(tmp_path, tiny_model_dir, "lora")
    config.model.truncation = "keep_end"
    with pytest.raises(HoneError, match="keep_end is not supported by method dpo"):
        run_training(config, Console(record=True))
    assert not list((tmp_path / "runs" / "dpo-lora").glob("adapter*")), "nothing was trained"


def test_drop_policy_leaves_out_pairs_over_the_limit() -> None:
    from datasets import Dataset

    rows = {
        "prompt_ids": [[1] * 5, [1] * 5],
        "chosen_ids": [[2] * 3, [2] * 9],
        "rejected_ids": [[3] * 4, [3]],
    }
    kept, too_long = dpo.apply_length_policy(
        Dataset.from_dict(rows), examples=3, max_length=10, policy="drop"
    )
    # One pair TRL had already left out (its prompt filled the limit), and 5 + 9 > 10; 5 + 4 fits.
    assert too_long == 2 and len(kept) == 1 and kept[0]["chosen_ids"] == [2] * 3
    cut, counted = dpo.apply_length_policy(
        Dataset.from_dict(rows), examples=2, max_length=10, policy="keep_start"
    )
    assert counted == 1 and len(cut) == 2, "keep_start keeps the long pair; TRL cuts it when batching"
