"""The main job end to end: check the data, fine-tune, and run the decision ladder on the held-out split.

`hone train` makes the training run folder and trains; the ladder then scores the base model zero-shot,
few-shot and with RAG next to the fine-tuned run, on the same test examples, and recommends the cheapest
rung that meets the bar. The ladder is an evaluation run of its own (`<run>-ladder/`, as `hone evaluate`
would write it); the training run's manifest links to it and carries its headline figures, so the
training run folder is only ever written by training and by this one manifest update.
"""

from __future__ import annotations

import os
import time

from rich.console import Console

from hone.config import HoneConfig
from hone.contract import EvaluationLink, Ladder, LadderRung
from hone.errors import HoneError
from hone.evaluate.ladder import prepare, run_ladder
from hone.evaluate.summary import show_ladder
from hone.registry.gate import promote
from hone.registry.refs import Ref
from hone.registry.show import print_gate
from hone.registry.store import Registry
from hone.runs import RunFolder, failure_recorded, open_language_model_run
from hone.track import track_completed
from hone.train.pipeline import run_training


def run_quickstart(config: HoneConfig, console: Console) -> tuple[RunFolder, RunFolder]:
    """(the training run, its evaluation run)."""
    began = time.perf_counter()
    if config.data.test is None:
        raise HoneError("data.test: the quickstart needs a held-out test split to compare the rungs on")
    inputs = prepare(config, [])  # the evaluation's inputs are checked before any training time is spent
    run = run_training(config, console, track=False)
    evaluation = RunFolder.create(config, "evaluation", name=f"{run.path.name}-ladder")
    link = os.path.relpath(evaluation.path, run.path)

    def link_failure(error: str) -> None:
        run.update(evaluation=EvaluationLink(status="failed", run=link, error=error))

    with failure_recorded(evaluation, also=link_failure):  # an error or SIGTERM: both runs say so
        inputs.candidates.append(open_language_model_run(run.path, "are evaluated"))
        evaluation.update(evaluates=os.path.relpath(run.path, evaluation.path))
        ladder = run_ladder(inputs, evaluation, console)
        evaluation.update(
            candidates=[str(run.path)],
            metrics={rung.name: rung.value(ladder.primary_metric) for rung in ladder.rungs},
            recommendation=ladder.recommendation,
        )
        evaluation.finish("completed")
    tuned = next(rung for rung in ladder.rungs if rung.kind == "fine-tuned")
    run.update(metrics=headline(tuned), evaluation=evaluation_link(ladder, link))
    if config.track.enabled:
        track_completed(run, config, console)
        track_completed(evaluation, config, console)
    show_ladder(ladder, console)
    if config.registry.name:
        register(run, config, console)
    minutes = (time.perf_counter() - began) / 60
    console.print(f"[bold green]Done[/] in {minutes:.1f} min. Report: {evaluation.path / 'report.html'}")
    return run, evaluation


def register(run: RunFolder, config: HoneConfig, console: Console) -> None:
    """Register the run as the next version of `registry.name` and promote it through the gate."""
    name, alias = config.registry.name, config.registry.promote_to
    assert name is not None
    registry = Registry(config.track.uri)
    version = registry.add(run.path, name)
    console.print(f"[bold]Registered[/] {version.ref} (sha256 {version.sha256[:16]})")
    if alias is None:
        return
    outcome = promote(registry, Ref(version.name, version.version), alias, console)
    print_gate(outcome, console)
    if outcome.moved:
        console.print(f"[bold green]Promoted[/] {version.ref} -> {name}@{alias}")
        console.print(
            f"Serve it: [bold]hone serve -c configs/serve.yaml[/], then ask for model {name}@{alias} "
            "(README: a curl and an openai client call)"
        )
    else:
        held = outcome.holder.version if outcome.holder else "none"
        console.print(f"[bold yellow]The gate refused[/] {version.ref}: {name}@{alias} stays at {held}")


def headline(rung: LadderRung) -> dict[str, float]:
    """The figures the registry and promotion gates compare: flat, numeric."""
    flat = {name: scores.value for name, scores in rung.metrics.items()}
    if rung.general:
        flat["general_probe_accuracy"] = rung.general.probe_accuracy
        flat["general_perplexity"] = rung.general.perplexity
    return flat


def evaluation_link(ladder: Ladder, link: str) -> EvaluationLink:
    return EvaluationLink(
        status="completed",
        run=link,
        primary_metric=ladder.primary_metric,
        baseline=ladder.baseline,
        recommendation=ladder.recommendation,
    )
