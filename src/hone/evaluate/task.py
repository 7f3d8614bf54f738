"""Generating one rung's answers on a test split, with a progress bar; the task's JSON Schema."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from hone.errors import HoneError
from hone.evaluate.generate import Generation, generate_chat
from hone.progress import StepProgress

# Another engine's generation for answer_all: (prompts, advance the progress by n) -> one reply per prompt
Generate = Callable[[Sequence[list[dict[str, Any]]], Callable[[int], None]], list[Generation]]


@dataclass
class Answers:
    generations: list[Generation]
    seconds: float  # wall time of the whole rung: what throughput and cost are computed from

    @property
    def outputs(self) -> list[str]:
        return [g.text for g in self.generations]


def load_schema(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if not path.is_file():
        raise HoneError(f"{path}: JSON Schema file not found (evaluate.json_schema)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HoneError(f"{path} line {exc.lineno}: not valid JSON: {exc.msg}") from None


def answer_all(
    label: str,
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict[str, Any]]],
    max_new_tokens: int,
    batch_size: int,
    console: Console,
    generate: Generate | None = None,
) -> Answers:
    """Greedy answers to every prompt, with progress shown under the rung's name: batched by `model` in this
    process, or by `generate` (another engine; `model` is then unused)."""
    with StepProgress(console, label, len(prompts), transient=True) as progress:
        began = time.perf_counter()
        if generate is not None:
            generations = generate(prompts, progress.advance)
        else:
            generations = generate_chat(
                model, tokenizer, prompts, max_new_tokens, batch_size, on_batch=progress.advance
            )
        seconds = time.perf_counter() - began
    console.print(f"  {label}: {len(prompts)} answers in {seconds:.0f} s")
    return Answers(generations, seconds)
