"""LLM-as-judge: a model grades each answer against the reference with the user's rubric.

The judge is any model hone can load: a model reference (alias, local folder, GGUF, hub id) or a
completed run folder. It answers greedily with a number from 1 to `max_score`; the per-example score is
that number over `max_score`, and 0 when the reply holds no number in range (counted and reported, since
a judge that cannot follow the format is itself a finding).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rich.console import Console

from hone.config import JudgeSettings, ModelConfig
from hone.evaluate.task import answer_all

SYSTEM = (
    "You are a strict, fair grader. Follow the rubric exactly. Reply with only the score, a whole number."
)
NUMBER = re.compile(r"\d+")


def judge_prompt(settings: JudgeSettings, question: str, reference: str, answer: str) -> list[dict[str, str]]:
    user = (
        f"Rubric: {settings.rubric}\n\nQuestion:\n{question}\n\nReference answer:\n{reference}\n\n"
        f"Answer to grade:\n{answer}\n\nScore from 1 to {settings.max_score}:"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_score(reply: str, max_score: int) -> float | None:
    """The first whole number in the reply within 1..max_score, as a fraction of max_score."""
    for match in NUMBER.finditer(reply):
        value = int(match.group())
        if 1 <= value <= max_score:
            return value / max_score
    return None


def load_judge(reference: str, precision: str = "fp32", opt_in: ModelConfig | None = None) -> tuple[Any, Any]:
    """The judge model (a hone run folder or any model reference) where evaluation runs its local models,
    at the evaluated models' precision, as the config's model section `opt_in` allows it to load."""
    from hone.models.resolve import load_model, load_tokenizer, local_inference, resolve_model
    from hone.models.trained import trained_model
    from hone.runs import MANIFEST, open_language_model_run

    device, dtype = local_inference(precision)
    path = Path(reference)
    if (path / MANIFEST).is_file():
        return trained_model(open_language_model_run(path, "judge"), dtype, device, opt_in)
    model_path = resolve_model(reference)
    return load_model(model_path, dtype, device, opt_in=opt_in), load_tokenizer(model_path, opt_in)


def judge_rungs(
    settings: JudgeSettings,
    questions: list[str],
    references: list[str],
    outputs: dict[str, list[str]],
    batch_size: int,
    console: Console,
    precision: str = "fp32",
    opt_in: ModelConfig | None = None,
) -> dict[str, tuple[list[float], int]]:
    """Per rung: the judge's per-example scores, and how many replies held no usable score."""
    model, tokenizer = load_judge(settings.model, precision, opt_in)
    results = {}
    for rung, answers in outputs.items():
        prompts = [
            judge_prompt(settings, q, r, a) for q, r, a in zip(questions, references, answers, strict=True)
        ]
        replies = answer_all(
            f"judging {rung}", model, tokenizer, prompts, settings.max_new_tokens, batch_size, console
        )
        parsed = [parse_score(reply, settings.max_score) for reply in replies.outputs]
        results[rung] = ([score or 0.0 for score in parsed], sum(score is None for score in parsed))
    return results
