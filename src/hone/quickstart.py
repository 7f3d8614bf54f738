"""The main job end to end: check the data, fine-tune, and run the decision ladder on the held-out split.

`hone train` makes the run folder and trains; the ladder then scores the base model zero-shot, few-shot
and with RAG next to the fine-tuned run, on the same test examples, and recommends the cheapest rung
that meets the bar. Everything lands in the one run folder: weights, history, ladder.json, report.html.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from hone.config import HoneConfig
from hone.errors import HoneError
from hone.evaluate.ladder import prepare, run_ladder
from hone.evaluate.summary import show_ladder
from hone.runs import RunFolder, open_language_model_run
from hone.track import track_completed
from hone.train.pipeline import run_training


def run_quickstart(config: HoneConfig, console: Console) -> RunFolder:
    began = time.perf_counter()
    if config.data.test is None:
        raise HoneError("data.test: the quickstart needs a held-out test split to compare the rungs on")
    inputs = prepare(config, [])  # the evaluation's inputs are checked before any training time is spent
    run = run_training(config, console, track=False)
    try:
        inputs.candidates.append(open_language_model_run(run.path, "are evaluated"))
        ladder = run_ladder(inputs, run, console)
    except BaseException as exc:
        run.update(evaluation={"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    tuned = next(rung for rung in ladder["rungs"] if rung["kind"] == "fine-tuned")
    run.update(metrics=headline(tuned), evaluation=evaluation_record(ladder))
    if config.track.enabled:
        track_completed(run, config, console)
    show_ladder(ladder, console)
    minutes = (time.perf_counter() - began) / 60
    console.print(f"[bold green]Done[/] in {minutes:.1f} min. Report: {run.path / 'report.html'}")
    return run


def headline(rung: dict[str, Any]) -> dict[str, float]:
    """The figures the registry and promotion gates compare: flat, numeric."""
    flat = {name: scores["value"] for name, scores in rung["metrics"].items()}
    if rung.get("general"):
        flat["general_probe_accuracy"] = rung["general"]["probe_accuracy"]
        flat["general_perplexity"] = rung["general"]["perplexity"]
    return flat


def evaluation_record(ladder: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "completed",
        "ladder": "ladder.json",
        "primary_metric": ladder["primary_metric"],
        "baseline": ladder["baseline"],
        "recommendation": ladder["recommendation"],
    }
