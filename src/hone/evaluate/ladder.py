"""The decision ladder: should you fine-tune at all?

Every rung answers the same frozen test split: the base model zero-shot, few-shot and with RAG, each
fine-tuned candidate (a completed run folder) and any hosted API. Each rung gets the task metrics with
95% bootstrap intervals, a paired bootstrap against the best prompting rung (the baseline), the examples
that flipped, its general-capability change, latency, tokens and cost. The result, `ladder.json`, is what
the terminal table and the HTML report show and what the registry's promotion gate can read later.

    <run>/ladder.json        the whole result (its format: hone.contract.Ladder)
    <run>/report.html        self-contained report with charts
    <run>/eval/<rung>.jsonl  every prediction with its per-example scores
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from hone import contract
from hone.config import HoneConfig
from hone.contract import LADDER_FORMAT, Ladder, TrainingMetrics
from hone.data.formats import Example
from hone.data.load import load_split, require_kind
from hone.data.tokenize import prompt_messages
from hone.data.version import dataset_hash
from hone.errors import HoneError
from hone.evaluate import baselines, cost
from hone.evaluate.api import answer_with_api
from hone.evaluate.general import GeneralResult, general_check, general_delta
from hone.evaluate.likelihood import reference_loss
from hone.evaluate.scoring import ExampleScores, MetricSpec, load_scorer, score_examples, task_metric_names
from hone.evaluate.stats import bootstrap_interval, flips, paired_bootstrap
from hone.evaluate.task import Answers, answer_all, load_schema
from hone.evaluate.vllm import VllmRungs, check_candidates, ladder_engine
from hone.io import atomic_write_jsonl
from hone.models.resolve import load_model, load_tokenizer, local_inference, resolve_model, weights_policy
from hone.models.trained import check_weights, trained_model
from hone.runs import (
    LADDER,
    METRICS,
    FinishedRun,
    RunFolder,
    failure_recorded,
    now,
    open_language_model_run,
    read_history,
)
from hone.track import is_number

SHOWN_FLIPS = 20
YES_NO_METRICS = ("exact_match", "normalized_exact_match", "accuracy", "json_valid", "schema_valid", "regex")


@dataclass
class Rung:
    """One rung's answers, before statistics: what the ladder measured."""

    name: str
    kind: str  # prompting, fine-tuned or api
    description: str
    model: str
    answers: Answers
    batch_size: int
    scores: ExampleScores | None = None
    general: dict[str, Any] | None = None  # general-capability figures and their change from the base
    training: dict[str, Any] | None = None
    context: list[list[str]] = field(default_factory=list)
    prices: tuple[float, float] | None = None  # API rungs: USD per million prompt / completion tokens
    judge_unparsed: int | None = None  # judge replies without a usable score
    reference: dict[str, float] | None = (
        None  # loss and perplexity of the reference answers given the prompts
    )


@dataclass
class LadderInputs:
    config: HoneConfig
    test: list[Example]
    train: list[Example]
    references: list[str]
    spec: MetricSpec
    candidates: list[FinishedRun]


def prepare(config: HoneConfig, candidates: list[Path], names: dict[Path, str] | None = None) -> LadderInputs:
    """Read and check everything the ladder needs before any model is loaded; `names` renames rungs (a
    registered version is shown as `<name>-v<version>`, not by the run it was registered from)."""
    settings = config.evaluate
    if config.data.test is None:
        raise HoneError("data.test: the ladder needs a frozen held-out test split")
    train: list[Example] = []
    if "few-shot" in settings.rungs:
        train = load_split(config.data.train, config.data.system_prompt, config.data.format)
    test = load_split(config.data.test, config.data.system_prompt, config.data.format)
    require_kind(test, "chat", "evaluate")
    if settings.limit:
        test = test[: settings.limit]
    if "rag" in settings.rungs and settings.rag.knowledge is None and "rungs" in settings.model_fields_set:
        raise HoneError("evaluate.rag.knowledge: set a knowledge base, or leave 'rag' out of evaluate.rungs")
    base = Path(config.model.reference).expanduser()
    if base.is_dir():  # an alias or a GGUF is converted to safetensors; a hub download is safetensors only
        weights_policy(base, config.model)
    runs = [
        replace(run, name=(names or {}).get(path, run.name))
        for path in candidates
        if (run := open_language_model_run(path, "are evaluated"))
    ]
    for candidate in runs:  # a corrupt adapter fails here, not after every prompting rung has run
        for folder in (candidate.weights, *([candidate.base] if candidate.kind != "full" else [])):
            check_weights(folder)
            weights_policy(folder, config.model)
    if settings.engine == "vllm":
        check_candidates(config, runs)
    spec = MetricSpec(
        names=list(settings.metrics),
        json_schema=load_schema(settings.json_schema),
        regex=settings.regex,
        scorer=load_scorer(settings.scorer) if settings.scorer else None,  # paths are relative to the cwd
        scorer_name=settings.scorer,
    )
    references = [e.messages[-1]["content"] for e in test]
    check_metric_names(settings, spec, references)
    return LadderInputs(config, test, train, references, spec, runs)


def check_metric_names(settings: Any, spec: MetricSpec, references: list[str]) -> None:
    """The metrics the task will report, and the primary and target metrics among them, before any work."""
    try:
        names = task_metric_names(references, spec)
    except HoneError as exc:
        raise HoneError(f"evaluate.metrics: {exc}") from None
    if settings.judge is not None:
        names.append("judge")
    checks = [(settings.target.metric, "evaluate.target.metric")] if settings.target else []
    if settings.primary_metric:
        checks.append((settings.primary_metric, "evaluate.primary_metric"))
    checks.append((settings.resolved_primary_metric(), "evaluate.primary_metric (default exact_match)"))
    for metric, where in checks:
        if metric not in names:
            raise HoneError(f"{where}: {metric!r} is not among this task's metrics: {', '.join(names)}")


def run_ladder(inputs: LadderInputs, run: RunFolder, console: Console) -> Ladder:
    """Evaluate every rung, write ladder.json, report.html and predictions into `run`; return the ladder."""
    settings = inputs.config.evaluate
    rungs: list[Rung] = []
    # before any model is loaded here: vLLM takes its share of the GPU's memory when it starts
    with ladder_engine(inputs.config, inputs.candidates, run.path / "vllm.log") as engine:
        base_general = prompting_rungs(inputs, rungs, console, engine)
        if base_general is not None:
            for rung in rungs:  # prompting leaves the weights alone: the base's figures, unchanged
                rung.general = base_general.against(base_general)
        for candidate in inputs.candidates:
            rungs.append(fine_tuned_rung(inputs, candidate, base_general, console, engine))
    for api in settings.api:
        prompts = [prompt_messages(e.messages) for e in inputs.test]
        answers = answer_with_api(api, prompts, settings.max_new_tokens, console)
        rungs.append(
            Rung(
                api.name,
                "api",
                f"{api.model} at {api.base_url}",
                api.model,
                answers,
                1,
                prices=(api.input_price, api.output_price),
            )
        )
    for rung in rungs:
        rung.scores = score_examples(rung.answers.outputs, inputs.references, inputs.spec)
    if settings.judge is not None:
        add_judge_scores(inputs, rungs, console)
    ladder = assemble(inputs, rungs)
    write_ladder(run, ladder, rungs, inputs)
    return ladder


def add_judge_scores(inputs: LadderInputs, rungs: list[Rung], console: Console) -> None:
    """The `judge` metric on every rung, from one judge model loaded once."""
    from hone.evaluate.judge import judge_rungs

    settings = inputs.config.evaluate
    assert settings.judge is not None
    questions = [baselines.query_text(prompt_messages(e.messages)) for e in inputs.test]
    outputs = {rung.name: rung.answers.outputs for rung in rungs}
    references, size = inputs.references, settings.batch_size
    judged = judge_rungs(
        settings.judge, questions, references, outputs, size, console, settings.precision, inputs.config.model
    )
    for rung in rungs:
        assert rung.scores is not None
        rung.scores.per_example["judge"], rung.judge_unparsed = judged[rung.name]
        rung.scores.names.append("judge")


def prompting_rungs(
    inputs: LadderInputs, rungs: list[Rung], console: Console, engine: VllmRungs | None = None
) -> General | None:
    """Zero-shot, few-shot and RAG on the base model (loaded once, unless `engine` generates and nothing
    needs its logits), and the base's general check."""
    config, settings = inputs.config, inputs.config.evaluate
    model_path = resolve_model(config.model.reference)
    tokenizer = load_tokenizer(model_path, config.model)
    general_check_wanted = bool(inputs.candidates) and settings.general.enabled
    model = None
    if needs_model_here(settings, engine, general_check_wanted):
        device, dtype = local_inference(settings.precision)
        model = load_model(model_path, dtype, device, opt_in=config.model)
    for name in prompting_rung_names(settings):
        if name == "zero-shot":
            prompt_rung = baselines.zero_shot(inputs.test)
        elif name == "few-shot":
            prompt_rung = baselines.few_shot(inputs.train, inputs.test, settings.few_shot, settings.seed)
        else:
            prompt_rung = baselines.rag(inputs.test, settings.rag)
        generate = engine.generator(None, tokenizer) if engine else None
        answers = answer_all(
            name,
            model,
            tokenizer,
            prompt_rung.prompts,
            settings.max_new_tokens,
            settings.batch_size,
            console,
            generate,
        )
        reference = reference_figures(inputs, model, tokenizer, prompt_rung.prompts)
        rungs.append(
            Rung(
                name,
                "prompting",
                prompt_rung.description,
                config.model.reference,
                answers,
                settings.batch_size,
                context=prompt_rung.context,
                reference=reference,
            )
        )
    general = None
    if general_check_wanted:
        general = measure_general(config, "base model", model, tokenizer, console)
    del model  # the base leaves memory before a candidate is loaded
    gc.collect()
    return general


def needs_model_here(settings: Any, engine: VllmRungs | None, general_check: bool) -> bool:
    """Whether a rung loads its model in this process: to generate (no engine), or for what only its logits
    give (the general check, reference loss)."""
    return engine is None or settings.reference_loss or general_check


def prompting_rung_names(settings: Any) -> list[str]:
    """The configured prompting rungs; the default list leaves RAG out when there is no knowledge base."""
    return [name for name in settings.rungs if name != "rag" or settings.rag.knowledge is not None]


def fine_tuned_rung(
    inputs: LadderInputs,
    candidate: FinishedRun,
    base_general: General | None,
    console: Console,
    engine: VllmRungs | None = None,
) -> Rung:
    settings = inputs.config.evaluate
    model = None
    if needs_model_here(settings, engine, base_general is not None):
        device, dtype = local_inference(settings.precision)
        model, tokenizer = trained_model(candidate, dtype, device, inputs.config.model)
    else:
        tokenizer = load_tokenizer(candidate.weights, inputs.config.model)  # as trained_model loads it
    prompts = [prompt_messages(e.messages) for e in inputs.test]
    generate = engine.generator(candidate, tokenizer) if engine else None
    answers = answer_all(
        candidate.name,
        model,
        tokenizer,
        prompts,
        settings.max_new_tokens,
        settings.batch_size,
        console,
        generate,
    )
    reference = reference_figures(inputs, model, tokenizer, prompts)
    general = None
    if base_general is not None:
        general = measure_general(inputs.config, candidate.name, model, tokenizer, console).against(
            base_general
        )
    del model
    gc.collect()
    return Rung(
        candidate.name,
        "fine-tuned",
        f"{candidate.method} {candidate.kind} on {candidate.manifest.base_model.reference}",
        str(candidate.path),
        answers,
        settings.batch_size,
        general=general,
        training=training_record(candidate),
        reference=reference,
    )


def reference_figures(
    inputs: LadderInputs, model: Any, tokenizer: Any, prompts: list[list[dict[str, Any]]]
) -> dict[str, float] | None:
    """The model's loss and perplexity on the reference answers, given the rung's prompts, when asked."""
    settings = inputs.config.evaluate
    if not settings.reference_loss:
        return None
    measured = reference_loss(model, tokenizer, prompts, inputs.references, settings.batch_size)
    return {"loss": measured.loss, "perplexity": measured.perplexity}


@dataclass
class General:
    """The general-capability figures of one model: the shipped probes and, when asked, harness tasks."""

    probes: GeneralResult
    lm_eval: dict[str, dict[str, float]] | None = None

    def against(self, base: General) -> dict[str, Any]:
        """The ladder's `general` object: this model's figures and their change from the base."""
        record = general_delta(base.probes, self.probes)
        if self.lm_eval is not None and base.lm_eval is not None:
            record["lm_eval"] = self.lm_eval
            record["delta_lm_eval"] = {
                task: {name: value - base.lm_eval[task].get(name, 0.0) for name, value in scores.items()}
                for task, scores in self.lm_eval.items()
            }
        return record


def measure_general(config: HoneConfig, label: str, model: Any, tokenizer: Any, console: Console) -> General:
    settings = config.evaluate.general
    console.print(f"  general-capability check of the {label}")
    probes = general_check(
        model, tokenizer, config.evaluate.batch_size, settings.max_new_tokens, settings.limit
    )
    if not settings.lm_eval_tasks:
        return General(probes)
    from hone.evaluate.lm_eval import run_lm_eval

    console.print(f"  lm-evaluation-harness: {', '.join(settings.lm_eval_tasks)}")
    scores = run_lm_eval(
        model,
        tokenizer,
        settings.lm_eval_tasks,
        settings.lm_eval_include,
        settings.lm_eval_limit,
        config.evaluate.batch_size,
    )
    return General(probes, scores)


def training_record(candidate: FinishedRun) -> dict[str, Any]:
    """What the report shows of a candidate's training: the loss curve and the time it took."""
    summary = candidate.manifest.training
    if summary is None and (candidate.path / METRICS).is_file():
        summary = contract.read(TrainingMetrics, candidate.path / METRICS).training
    history = [
        {
            key: row[key]
            for key in ("step", "loss", "eval_loss")
            if is_number(row.get(key)) and np.isfinite(row[key])
        }
        for row in read_history(candidate.path)
        if isinstance(row.get("step"), int)
    ]
    return {
        "run": str(candidate.path),
        "method": candidate.method,
        "adapter": candidate.kind,
        "train_seconds": summary.seconds if summary else 0.0,
        "history": history,
    }


def assemble(inputs: LadderInputs, rungs: list[Rung]) -> Ladder:
    """Statistics, costs and the recommendation over the measured rungs: the ladder.json object."""
    settings = inputs.config.evaluate
    primary = settings.resolved_primary_metric()
    n = len(inputs.test)
    values = {r.name: r.scores.value(primary) for r in rungs if r.scores}
    prompting = [r for r in rungs if r.kind == "prompting"] or rungs
    baseline = max(prompting, key=lambda r: values[r.name])
    records = [rung_record(inputs, rung, baseline, primary, n) for rung in rungs]
    target = settings.target.model_dump() if settings.target else None
    device, dtype = local_inference(settings.precision)
    ladder = {
        "format": LADDER_FORMAT,
        "created": now(),
        "task": {
            "test": str(inputs.config.data.test),
            "examples": n,
            "dataset_hash": dataset_hash({"test": inputs.test}),
        },
        "primary_metric": primary,
        "device": device,
        "precision": str(dtype).removeprefix("torch."),
        "target": target,
        "baseline": baseline.name,
        "rungs": records,
        "recommendation": cost.recommend(records, primary, target, baseline.name, settings.cost.requests),
    }
    return Ladder.model_validate(ladder)


def rung_record(inputs: LadderInputs, rung: Rung, baseline: Rung, primary: str, n: int) -> dict[str, Any]:
    settings = inputs.config.evaluate
    scores = rung.scores
    assert scores is not None and baseline.scores is not None
    resamples, seed = settings.bootstrap_resamples, settings.seed
    metrics = {}
    for name in scores.names:
        value, low, high = bootstrap_interval(scores.statistic(name), n, resamples, seed)
        metrics[name] = {"value": value, "low": low, "high": high}
    significance, flipped = None, None
    if rung is not baseline:
        paired = paired_bootstrap(
            baseline.scores.statistic(primary), scores.statistic(primary), n, resamples, seed
        )  # B minus A: the rung's gain over the baseline
        significance = {"vs": baseline.name, "metric": primary, **asdict(paired)}
        flipped = flip_record(inputs, baseline, rung, primary)
    generations = rung.answers.generations
    tokens = {
        "prompt_mean": float(np.mean([g.prompt_tokens for g in generations])) if generations else 0.0,
        "completion_mean": float(np.mean([g.completion_tokens for g in generations])) if generations else 0.0,
    }
    timing = cost.latency([g.seconds for g in generations], rung.answers.seconds, rung.batch_size)
    return {
        "name": rung.name,
        "kind": rung.kind,
        "description": rung.description,
        "model": rung.model,
        "metrics": metrics,
        "significance": significance,
        "flips": flipped,
        "general": rung.general,
        "latency": timing,
        "tokens": tokens,
        "cost": cost_record(settings, rung, timing, tokens),
        "training": rung.training,
        **({"judge_unparsed": rung.judge_unparsed} if rung.judge_unparsed is not None else {}),
        **({"reference_loss": rung.reference} if rung.reference is not None else {}),
    }


def cost_record(
    settings: Any, rung: Rung, timing: dict[str, float], tokens: dict[str, float]
) -> dict[str, Any]:
    prices = settings.cost
    if rung.prices is not None:
        per_1000 = cost.api_per_1000(tokens["prompt_mean"], tokens["completion_mean"], *rung.prices)
        basis = f"API at ${rung.prices[0]:g}/${rung.prices[1]:g} per million prompt/completion tokens"
    else:
        per_1000 = cost.self_hosted_per_1000(timing["requests_per_second"], prices.hourly_price)
        basis = f"self-hosted at ${prices.hourly_price:g}/hour, measured throughput"
    training_price = (
        prices.training_hourly_price if prices.training_hourly_price is not None else prices.hourly_price
    )
    seconds = rung.training["train_seconds"] if rung.training else 0.0
    return {
        "per_1000_requests": round(per_1000, 6),
        "training_one_off": round(cost.training_cost(seconds, training_price), 6),
        "basis": basis,
    }


def flip_record(inputs: LadderInputs, before: Rung, after: Rung, primary: str) -> dict[str, Any] | None:
    """Examples right before and wrong after (and the reverse).

    Right and wrong need a per-example yes/no: the primary metric when it is one, else exact match.
    """
    assert before.scores is not None and after.scores is not None
    yes_no = primary in YES_NO_METRICS or (primary.endswith("_accuracy") and primary != "mean_field_accuracy")
    metric = primary if yes_no else "exact_match"
    if metric not in before.scores.per_example:
        return None
    right_before = [v >= 1.0 for v in before.scores.per_example[metric]]
    right_after = [v >= 1.0 for v in after.scores.per_example[metric]]
    fixed, broken = flips(right_before, right_after)

    def shown(indices: list[int]) -> list[dict[str, Any]]:
        return [
            {
                "index": i,
                "input": baselines.query_text(prompt_messages(inputs.test[i].messages)),
                "reference": inputs.references[i],
                "before": before.answers.outputs[i],
                "after": after.answers.outputs[i],
            }
            for i in indices[:SHOWN_FLIPS]
        ]

    return {
        "vs": before.name,
        "metric": metric,
        "fixed": shown(fixed),
        "broken": shown(broken),
        "fixed_count": len(fixed),
        "broken_count": len(broken),
    }


def write_ladder(run: RunFolder, ladder: Ladder, rungs: list[Rung], inputs: LadderInputs) -> None:
    from hone.evaluate.report import write_report

    artifacts = {}
    for rung in rungs:
        name = f"eval/{rung.name}.jsonl"
        atomic_write_jsonl(run.path / name, predictions(rung, inputs))
        artifacts[f"predictions_{rung.name}"] = name
    contract.write(ladder, run.path / LADDER)
    write_report(ladder, run.path / "report.html")
    run.update(artifacts={**artifacts, "ladder": LADDER, "report": "report.html"})


def predictions(rung: Rung, inputs: LadderInputs) -> list[dict[str, Any]]:
    assert rung.scores is not None
    rows = []
    for i, (example, generation) in enumerate(zip(inputs.test, rung.answers.generations, strict=True)):
        row: dict[str, Any] = {
            "source": example.source,
            "line": example.line,
            "reference": inputs.references[i],
            "output": generation.text,
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "scores": {name: values[i] for name, values in rung.scores.per_example.items()},
        }
        if rung.context:
            row["context"] = rung.context[i]
        rows.append(row)
    return rows


def run_evaluation(
    config: HoneConfig, candidates: list[Path], console: Console, names: dict[Path, str] | None = None
) -> tuple[RunFolder, Ladder]:
    """`hone evaluate`: the ladder in a new evaluation run folder (runs/evaluate-<time> by default)."""
    every = [*config.evaluate.candidates, *candidates]
    inputs = prepare(config, every, names)  # bad input fails here, before a run folder exists
    run = RunFolder.create(config, "evaluation")
    console.print(f"[bold]Run folder[/] {run.path}")
    with failure_recorded(run):  # an error or SIGTERM marks the run failed instead of leaving it running
        ladder = run_ladder(inputs, run, console)
        run.update(
            candidates=[str(path) for path in every],
            metrics={rung.name: rung.value(ladder.primary_metric) for rung in ladder.rungs},
            recommendation=ladder.recommendation,
        )
        run.finish("completed")
    return run, ladder
