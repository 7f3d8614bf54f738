"""RL (GRPO, RLOO) on the tiny model through `hone train`'s pipeline: a few real steps per adapter in which
every trainable parameter moves (TRL's test pattern), validation judged by reward, a reward model as the
reward, a toy reward that training visibly raises, and reward specs that fail with a usable message."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console

from hone.config import HoneConfig
from hone.errors import HoneError
from hone.runs import RunFolder
from hone.train import rl
from hone.train.pipeline import run_training

EXAMPLE_REWARD = Path(__file__).resolve().parents[3] / "examples" / "support-tickets" / "reward.py"

# Half the vocabulary: the tokens whose (tied) output embedding points along one fixed direction. A policy
# raises all their logits at once by turning its last hidden state that way, which the random 2-layer model
# learns in a few steps; a subset of ids chosen without regard to the model would take hundreds. The asserts
# check that TRL calls the reward the way hone.train.rl documents.
TOY_REWARD = """
import torch
from safetensors.torch import load_file

EMBEDDING = load_file({weights!r})["model.embed_tokens.weight"]
DIRECTION = torch.randn(EMBEDDING.shape[1], generator=torch.Generator().manual_seed(0))
FAVOURED = set((EMBEDDING @ DIRECTION > 0).nonzero().flatten().tolist())


def aligned(prompts, completions, reference, completion_ids, **kwargs):
    assert len(prompts) == len(completions) == len(reference) == len(completion_ids)
    assert prompts[0][-1]["role"] == "user" and completions[0][0]["role"] == "assistant"
    assert all(isinstance(answer, str) and answer.startswith("{{") for answer in reference)
    return [sum(token in FAVOURED for token in ids) / max(1, len(ids)) for ids in completion_ids]
"""


@pytest.fixture
def snapshot(spy_on: Callable[[ModuleType], Any]) -> Any:
    return spy_on(rl)


@pytest.fixture
def short_chats(tmp_path: Path) -> Path:
    """Chats with prompts of ~20 tokens: on CPU, TRL scores the prompt positions over the whole vocabulary
    too, so the shipped task's ~170-token prompts would make each step several times slower."""
    products = ["sync", "pay", "mail", "mobile", "analytics", "id"]
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Triage."},
                {"role": "user", "content": f"nimbus {products[i % 6]} fails, case {i}"},
                {"role": "assistant", "content": json.dumps({"product": f"nimbus-{products[i % 6]}"})},
            ]
        }
        for i in range(16)
    ]
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def toy_reward(tmp_path: Path, tiny_model_dir: Path) -> str:
    path = tmp_path / "toy_reward.py"
    path.write_text(TOY_REWARD.format(weights=str(tiny_model_dir / "model.safetensors")), encoding="utf-8")
    return f"{path}:aligned"


def config_for(tmp_path: Path, model: Path, train: Path, reward: str, adapter: str = "lora", **settings: Any):
    """A small rl config; `settings` override train fields, and `rl` merges into train.rl."""
    rl_settings = {"reward": reward, "num_generations": 4, "max_new_tokens": 6, **settings.pop("rl", {})}
    validation = settings.pop("validation", None)
    return HoneConfig.model_validate(
        {
            "model": {"reference": str(model), "max_length": 256},
            "data": {"train": str(train), **({"validation": str(validation)} if validation else {})},
            "train": {
                "method": "rl",
                "adapter": {"kind": adapter, "r": 4, "alpha": 8} if adapter != "full" else "full",
                "learning_rate": 1e-2,
                "max_steps": 2,
                # No warm-up: its first step has learning rate 0, and LoRA's A matrices get a gradient only
                # once B has left zero, so two steps would not reach them.
                "warmup_ratio": 0.0,
                "batch_size": 4,
                "logging_steps": 1,
                "rl": rl_settings,
                **settings,
            },
            "run": {"name": f"rl-{adapter}", "dir": str(tmp_path / "runs")},
            "track": {"enabled": False},
        }
    )


def history(run: RunFolder) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]


def assert_trained(run: RunFolder, steps: int) -> list[dict[str, Any]]:
    manifest = run.manifest
    assert manifest.status == "completed"
    assert manifest.training.steps == steps
    records = history(run)
    losses = [row["loss"] for row in records if "loss" in row]
    assert len(losses) == steps and all(math.isfinite(loss) for loss in losses)
    assert all("reward" in row for row in records if "loss" in row), "the mean reward is in the history"
    assert (run.path / manifest.artifacts["weights"]).is_dir()
    return records


@pytest.mark.parametrize("adapter", ["full", "lora", "qlora"])
def test_grpo_moves_every_trainable_parameter(
    adapter: str, tmp_path: Path, tiny_model_dir: Path, short_chats: Path, toy_reward: str, snapshot
) -> None:
    config = config_for(tmp_path, tiny_model_dir, short_chats, toy_reward, adapter)
    run = run_training(config, Console(record=True, width=160))
    records = assert_trained(run, steps=2)
    assert all("rewards/aligned/mean" in row for row in records if "loss" in row)
    assert not snapshot.unchanged(), f"never trained: {snapshot.unchanged()}"
    expected = {"full": "model", "lora": "adapter", "qlora": "adapter"}[adapter]
    assert run.manifest.artifacts["weights"] == expected


def test_rloo_with_a_kl_penalty_trains_lora(
    tmp_path: Path, tiny_model_dir: Path, short_chats: Path, toy_reward: str, snapshot
) -> None:
    long_chat = {
        "messages": [
            {"role": "user", "content": "nimbus sync fails " * 60},
            {"role": "assistant", "content": json.dumps({"product": "nimbus-sync"})},
        ]
    }
    with short_chats.open("a", encoding="utf-8") as chats:
        chats.write(json.dumps(long_chat) + "\n")
    config = config_for(
        tmp_path, tiny_model_dir, short_chats, toy_reward, rl={"algorithm": "rloo", "beta": 0.05}
    )
    run = run_training(config, Console(record=True, width=160))
    records = assert_trained(run, steps=2)
    assert run.manifest.training.truncated_examples == 1, "the prompt over max_length was left out"
    assert any("kl" in row for row in records), "beta > 0 compares with the reference policy"
    assert not snapshot.unchanged(), f"never trained: {snapshot.unchanged()}"
    saved = sorted(p.name for p in (run.path / "adapter").iterdir())
    assert "adapter_model.safetensors" in saved and "ref" not in saved, "only the trained adapter is saved"


def test_validation_is_judged_by_reward_with_the_shipped_task_and_reward(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    validation = tmp_path / "few-validation.jsonl"
    validation.write_text("".join(small_task["validation"].read_text().splitlines(keepends=True)[:3]))
    config = config_for(
        tmp_path,
        tiny_model_dir,
        small_task["train"],
        f"{EXAMPLE_REWARD}:score",
        validation=validation,
        eval_every=1,
        rl={"num_generations": 2, "max_new_tokens": 4},
    )
    run = run_training(config, Console(record=True, width=160))
    records = assert_trained(run, steps=2)
    assert [row["step"] for row in records if "eval_reward" in row] == [1, 2]
    rewards = [row["rewards/score/mean"] for row in records if "loss" in row]
    assert all(0.0 <= reward < 0.1 for reward in rewards), "random text is never a JSON object"
    training = run.manifest.training
    assert training.best_step in (1, 2), "keep_best chose a step by eval_reward"
    best = max(row["eval_reward"] for row in records if "eval_reward" in row)
    assert training.best_metric == {"eval_reward": pytest.approx(best)}


def test_rl_raises_the_mean_reward_of_a_toy_reward(
    tmp_path: Path, tiny_model_dir: Path, short_chats: Path, toy_reward: str
) -> None:
    config = config_for(
        tmp_path,
        tiny_model_dir,
        short_chats,
        toy_reward,
        "full",
        max_steps=12,
        rl={"temperature": 0.1, "max_new_tokens": 4},
    )
    run = run_training(config, Console(record=True, width=160))
    rewards = [row["reward"] for row in assert_trained(run, steps=12) if "reward" in row]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.2, f"mean reward {first:.2f} over the first 3 steps, {last:.2f} over the last 3"


def test_a_reward_model_run_is_the_reward(tmp_path: Path, tiny_model_dir: Path, short_chats: Path) -> None:
    """The reward-model run is made by hand (a randomly initialised score head on the tiny model, saved as
    a full-model run), so this test does not depend on the reward trainer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward_config = config_for(tmp_path, tiny_model_dir, short_chats, "unused.py:f", "full")
    reward_config.train.method = "reward"
    reward_config.run.name = "reward-model"
    reward_run = RunFolder.create(reward_config)
    scorer = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    scorer.config.pad_token_id = scorer.config.eos_token_id
    scorer.save_pretrained(reward_run.path / "model")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(reward_run.path / "model")
    reward_run.update(base_model={"path": str(tiny_model_dir)}, artifacts={"weights": "model"})
    reward_run.finish("completed")

    config = config_for(tmp_path, tiny_model_dir, short_chats, str(reward_run.path))
    run = run_training(config, Console(record=True, width=160))
    records = assert_trained(run, steps=2)
    assert all(math.isfinite(row["rewards/reward_model/mean"]) for row in records if "loss" in row)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("make_spec", "message"),
    [
        (lambda tmp: f"{tmp}/missing.py:score", "missing.py not found"),
        (lambda tmp: write(tmp / "r.py", "def other(**kw): return []\n") + ":score", "defines no 'score'"),
        (lambda tmp: write(tmp / "r.py", "score = 3\n") + ":score", "is a int, not a function"),
        (lambda tmp: write(tmp / "r.py", "def score(prompts, completions): ...\n") + ":score", "**kwargs"),
        (lambda tmp: write(tmp / "r.py", "import nothing_here\n") + ":score", "importing"),
        (lambda tmp: str(tmp), "not a run folder"),
        (lambda tmp: "score", "expected 'path/to/file.py:function'"),
    ],
)
def test_a_bad_reward_spec_says_what_is_wrong(tmp_path: Path, make_spec: Any, message: str) -> None:
    with pytest.raises(HoneError, match=r"train\.rl\.reward") as raised:
        rl.load_reward(make_spec(tmp_path))
    assert message in str(raised.value)


def test_a_run_that_is_not_a_reward_model_is_refused(
    tmp_path: Path, tiny_model_dir: Path, short_chats: Path
) -> None:
    sft = config_for(tmp_path, tiny_model_dir, short_chats, "unused.py:f")
    sft.train.method = "sft"
    folder = RunFolder.create(sft)
    with pytest.raises(HoneError, match="the run's method is 'sft', not 'reward'"):
        rl.load_reward(str(folder.path))
    folder.update(method="reward")
    with pytest.raises(HoneError, match="did not complete"):
        rl.load_reward(str(folder.path))


def test_prompts_must_leave_room_for_a_completion(
    tmp_path: Path, tiny_model_dir: Path, short_chats: Path
) -> None:
    config = config_for(tmp_path, tiny_model_dir, short_chats, f"{EXAMPLE_REWARD}:score")
    config.model.max_length = 24  # the prompts are ~20 tokens; 6 more are kept for the completion
    with pytest.raises(HoneError, match=r"no training prompt fits in model\.max_length \(24\)"):
        run_training(config, Console(record=True, width=160))


def test_completions_per_step_must_be_whole_groups(
    tmp_path: Path, tiny_model_dir: Path, short_chats: Path, toy_reward: str
) -> None:
    config = config_for(tmp_path, tiny_model_dir, short_chats, toy_reward, batch_size=3)
    with pytest.raises(HoneError, match=r"train\.batch_size \(3\) x train\.gradient_accumulation \(1\)"):
        run_training(config, Console(record=True, width=160))
    assert json.loads((tmp_path / "runs" / "rl-lora" / "manifest.json").read_text())["status"] == "failed"
