"""Evaluate one model on a split of chat examples: generate, score, keep every prediction."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hone.data.formats import Example
from hone.data.tokenize import prompt_messages
from hone.errors import HoneError
from hone.evaluate.generate import generate_chat
from hone.evaluate.metrics import parse_json_object, score_json_outputs


@dataclass
class Evaluation:
    label: str
    scores: dict[str, Any]
    predictions: list[dict[str, Any]]


def load_schema(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if not path.is_file():
        raise HoneError(f"{path}: JSON Schema file not found (evaluate.json_schema)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HoneError(f"{path} line {exc.lineno}: not valid JSON: {exc.msg}") from None


def evaluate_model(
    label: str,
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    schema: dict[str, Any] | None,
    max_new_tokens: int,
    batch_size: int,
    console: Console,
) -> Evaluation:
    prompts = [prompt_messages(e.messages) for e in examples]
    references = [e.messages[-1]["content"] for e in examples]
    with Progress(
        TextColumn(f"[bold]evaluating {label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(label, total=len(prompts))
        generations = generate_chat(
            model,
            tokenizer,
            prompts,
            max_new_tokens,
            batch_size,
            on_batch=lambda n: progress.advance(task, n),
        )
    outputs = [g.text for g in generations]
    scores = score_json_outputs(outputs, references, schema)
    per_request = [g.seconds / max(batch_size, 1) for g in generations]
    scores["seconds_per_example"] = statistics.fmean(per_request) if per_request else 0.0
    scores["completion_tokens_mean"] = statistics.fmean(g.completion_tokens for g in generations)
    predictions = []
    for example, reference, output in zip(examples, references, outputs, strict=True):
        parsed = parse_json_object(output)
        predictions.append(
            {
                "source": example.source,
                "line": example.line,
                "reference": reference,
                "output": output,
                "valid_json": parsed is not None,
                "exact_match": parsed == json.loads(reference),
            }
        )
    return Evaluation(label, scores, predictions)
