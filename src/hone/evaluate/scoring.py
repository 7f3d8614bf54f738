"""Scoring a rung's replies for the ladder: which metrics, the user's own scorer, and per-example scores.

`score_examples` is the one entry point the ladder uses: it picks the metrics (from a `MetricSpec`, or a
default that fits the references) and returns every per-example value plus the corpus-level metrics (BLEU,
macro-F1) as functions of a set of example indices, which is what resampling needs. The arithmetic itself
is in hone.evaluate.metrics; this module chooses, checks and loads.
"""

from __future__ import annotations

import importlib.util
import inspect
import numbers
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from hone.errors import HoneError
from hone.evaluate.metrics import (
    bleu_from_statistics,
    bleu_statistics,
    exact_match,
    exact_match_text,
    field_accuracy,
    field_f1,
    macro_f1_from_codes,
    normalize_label,
    normalized_exact_match,
    parse_json_object,
    regex_match,
    rouge_l,
    schema_valid,
    sentence_chrf,
    token_f1,
)

METRICS: dict[str, str] = {
    "exact_match": "JSON tasks: the reply parses to the reference object; text tasks: equal after stripping",
    "normalized_exact_match": "equal after lowercasing and removing punctuation, articles and extra spaces",
    "token_f1": "SQuAD token F1 between the normalised reply and reference",
    "rouge_l": "ROUGE-L: F-measure of the longest common token subsequence",
    "bleu": "corpus BLEU (sacrebleu, 0-100)",
    "chrf": "mean sentence chrF (sacrebleu, 0-100)",
    "accuracy": "classification accuracy: the reply's label equals the reference label",
    "macro_f1": "classification macro-F1 over the reference labels",
    "json_valid": "the reply is a JSON object",
    "schema_valid": "the reply is a JSON object that validates against the task's JSON Schema",
    "field_accuracy": "one metric <field>_accuracy per schema property (or reference key): field is right",
    "mean_field_accuracy": "the mean of the per-field accuracies",
    "field_f1": "F1 over (key, value) pairs of the reply object vs the reference; nested keys dotted",
    "regex": "the reply matches the task's regular expression",
    "scorer": "the user's scoring function, a number in [0, 1] per example",
}
CORPUS_METRICS = frozenset({"bleu", "macro_f1"})
JSON_DEFAULT = [
    "json_valid",
    "schema_valid",
    "field_accuracy",
    "mean_field_accuracy",
    "field_f1",
    "exact_match",
]
TEXT_DEFAULT = ["exact_match", "normalized_exact_match", "token_f1", "rouge_l", "chrf", "bleu"]
FIELD_METRICS = frozenset({"field_accuracy", "mean_field_accuracy", "field_f1"})


# --- user scorer ------------------------------------------------------------------------------------------


def load_scorer(reference: str, base: Path | None = None) -> Callable[[str, str], float]:
    """Import `path/to/file.py:function` and return the function; a relative path is taken from `base`."""
    path_text, _, function = reference.rpartition(":")
    if not path_text or not function.isidentifier():
        raise HoneError(f"scorer '{reference}': expected 'path/to/file.py:function_name'")
    path = Path(path_text)
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise HoneError(f"{path}: scorer file not found (looking for function '{function}')")
    spec = importlib.util.spec_from_file_location(f"hone_scorer_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise HoneError(f"{path}: cannot be imported as Python (looking for function '{function}')")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: dataclasses and pickling look the module up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise HoneError(f"{path}: importing the scorer failed: {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, function):
        defined = sorted(
            name
            for name, value in vars(module).items()
            if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_")
        )
        raise HoneError(f"{path}: no function '{function}' (functions defined there: {', '.join(defined)})")
    scorer = getattr(module, function)
    if not callable(scorer):
        raise HoneError(f"{path}: '{function}' is a {type(scorer).__name__}, not a function")
    return scorer


def apply_scorer(
    scorer: Callable[[str, str], Any], outputs: Sequence[str], references: Sequence[str], name: str = "scorer"
) -> list[float]:
    """Run the user's scorer on every example; anything but a number in [0, 1] is the user's error to fix."""
    values = []
    for index, (output, reference) in enumerate(zip(outputs, references, strict=True)):
        try:
            value = scorer(output, reference)
        except Exception as exc:
            raise HoneError(f"scorer {name} failed on example {index}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
            raise HoneError(
                f"scorer {name} returned {value!r} for example {index}; expected a number in [0, 1]"
            )
        values.append(float(value))
    return values


# --- one entry point for the ladder -----------------------------------------------------------------------


@dataclass
class MetricSpec:
    """Which metrics to compute and what they need: empty `names` means the default for the task's kind."""

    names: list[str] | None = None
    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    scorer: Callable[[str, str], Any] | None = None
    scorer_name: str | None = None
    regex_fullmatch: bool = False


@dataclass
class ExampleScores:
    """Every metric of one model on one test set, kept per example so it can be resampled.

    `per_example` holds the metrics that are means over examples; `corpus` the ones that are not (BLEU,
    macro-F1), each as a function of the example indices to score on.
    """

    count: int
    names: list[str]  # every metric computed, in the order asked for
    per_example: dict[str, list[float]] = field(default_factory=dict)
    corpus: dict[str, Callable[[Sequence[int]], float]] = field(default_factory=dict)

    def value(self, name: str, indices: Sequence[int] | None = None) -> float:
        """The metric on all examples, or on the given indices (repeats allowed: a bootstrap draws them)."""
        if name in self.per_example:
            values = np.asarray(self.per_example[name], dtype=float)
            chosen = values if indices is None else values[np.asarray(indices, dtype=int)]
            return float(chosen.mean()) if chosen.size else 0.0
        if name in self.corpus:
            return self.corpus[name](range(self.count) if indices is None else indices)
        raise KeyError(f"metric '{name}' was not computed; computed: {', '.join(self.names)}")

    def statistic(self, name: str) -> np.ndarray | Callable[[Sequence[int]], float]:
        """What `hone.evaluate.stats` takes: the per-example array (fast path) or the corpus function."""
        if name in self.per_example:
            return np.asarray(self.per_example[name], dtype=float)
        if name in self.corpus:
            return self.corpus[name]
        raise KeyError(f"metric '{name}' was not computed; computed: {', '.join(self.names)}")


def task_fields(json_schema: dict[str, Any] | None, references: Sequence[dict[str, Any]]) -> list[str]:
    """The fields a JSON task is scored on: the schema's properties, else every key the references use."""
    if json_schema:
        return list(json_schema.get("properties", {}))
    return sorted({key for reference in references for key in reference})


def resolve_metric_names(spec: MetricSpec, json_task: bool, fields: Sequence[str]) -> list[str]:
    """The metric names to report, in order, with `field_accuracy` expanded to one name per field.

    Checks that each metric has what it needs (a schema, a regex, a scorer, JSON references).
    """
    requested = list(spec.names or [])
    if not requested:
        requested = (
            [n for n in JSON_DEFAULT if n != "schema_valid" or spec.json_schema]
            if json_task
            else TEXT_DEFAULT
        )
        requested += [name for name, wanted in (("regex", spec.regex), ("scorer", spec.scorer)) if wanted]
    field_metrics = [f"{name}_accuracy" for name in fields]
    names: list[str] = []
    for name in requested:
        if name not in METRICS and name not in field_metrics:
            known = [*METRICS, *field_metrics]
            raise HoneError(f"unknown metric '{name}'; available: {', '.join(known)}")
        if name in FIELD_METRICS and not json_task:
            raise HoneError(f"metric '{name}' needs every reference to be a JSON object")
        if name == "schema_valid" and not spec.json_schema:
            raise HoneError("metric 'schema_valid' needs a JSON Schema for the task")
        if name == "regex" and not spec.regex:
            raise HoneError("metric 'regex' needs a regular expression for the task")
        if name == "scorer" and spec.scorer is None:
            raise HoneError("metric 'scorer' needs a scoring function ('path/to/file.py:function')")
        names += field_metrics if name == "field_accuracy" else [name]
    return list(dict.fromkeys(names))


def _compile_validator(schema: dict[str, Any]) -> Draft202012Validator:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise HoneError(f"the JSON Schema is not valid (Draft 2020-12): {exc.message}") from None
    return Draft202012Validator(schema)


def _compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise HoneError(f"regex {pattern!r} is not a valid regular expression: {exc}") from None


@dataclass
class _Context:
    outputs: Sequence[str]
    references: Sequence[str]
    spec: MetricSpec
    predicted: list[dict[str, Any] | None]  # each reply parsed as a JSON object, or None
    objects: list[dict[str, Any]]  # the references parsed, on JSON tasks only
    fields: list[str]


def reference_objects(references: Sequence[str]) -> list[dict[str, Any]] | None:
    """The references as JSON objects when every one of them is one (a JSON task), else None."""
    parsed = [parse_json_object(reference) for reference in references]
    if not parsed or any(obj is None for obj in parsed):
        return None
    return [obj for obj in parsed if obj is not None]


def task_metric_names(references: Sequence[str], spec: MetricSpec) -> list[str]:
    """The metrics `score_examples` will report for these references, known before any reply exists."""
    objects = reference_objects(references)
    fields = task_fields(spec.json_schema, objects) if objects is not None else []
    return resolve_metric_names(spec, objects is not None, fields)


def score_examples(outputs: Sequence[str], references: Sequence[str], spec: MetricSpec) -> ExampleScores:
    """Score every reply against its reference with the metrics the spec asks for (or the default).

    The task counts as JSON when every reference parses as a JSON object; then `exact_match` compares parsed
    objects, otherwise stripped strings.
    """
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} references")
    parsed = reference_objects(references)
    json_task = parsed is not None
    objects = parsed or []
    fields = task_fields(spec.json_schema, objects) if json_task else []
    names = resolve_metric_names(spec, json_task, fields)
    context = _Context(outputs, references, spec, [parse_json_object(o) for o in outputs], objects, fields)
    scores = ExampleScores(count=len(outputs), names=names)
    for name in names:
        if name in CORPUS_METRICS:
            scores.corpus[name] = _corpus_metric(name, outputs, references)
        else:
            scores.per_example[name] = _per_example(name, context, json_task)
    return scores


TEXT_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match_text,
    "normalized_exact_match": normalized_exact_match,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "chrf": sentence_chrf,
    "accuracy": lambda output, reference: float(normalize_label(output) == normalize_label(reference)),
}


def _per_example(name: str, context: _Context, json_task: bool) -> list[float]:
    outputs, predicted, spec = context.outputs, context.predicted, context.spec
    json_pairs = list(zip(predicted, context.objects, strict=True)) if json_task else []
    if name == "exact_match" and json_task:
        return [exact_match(got, want) for got, want in json_pairs]
    if name in TEXT_METRICS:
        return [TEXT_METRICS[name](o, r) for o, r in zip(outputs, context.references, strict=True)]
    if name == "json_valid":
        return [float(got is not None) for got in predicted]
    if name == "schema_valid":
        validator = _compile_validator(spec.json_schema or {})
        return [float(schema_valid(got, validator)) for got in predicted]
    if name == "field_f1":
        return [field_f1(got, want) for got, want in json_pairs]
    if name == "mean_field_accuracy":
        per_field = [[field_accuracy(got, want, f) for got, want in json_pairs] for f in context.fields]
        return [float(v) for v in np.mean(per_field, axis=0)] if per_field else [0.0] * len(outputs)
    if name == "regex":
        pattern = _compile_regex(spec.regex or "")
        return [regex_match(output, pattern, spec.regex_fullmatch) for output in outputs]
    if name == "scorer":
        assert spec.scorer is not None  # resolve_metric_names checked it
        return apply_scorer(spec.scorer, outputs, context.references, spec.scorer_name or "scorer")
    field_name = name.removesuffix("_accuracy")  # one of the task's fields: resolve_metric_names checked it
    return [field_accuracy(got, want, field_name) for got, want in json_pairs]


def _corpus_metric(
    name: str, outputs: Sequence[str], references: Sequence[str]
) -> Callable[[Sequence[int]], float]:
    """A corpus metric as a function of example indices, with the per-example work done once up front.

    A bootstrap calls it a thousand times, so BLEU keeps each example's n-gram counts (summing them is the
    corpus score, as in sacrebleu's own significance tests) and macro-F1 works on integer-coded labels.
    """
    if name == "bleu":
        stats = bleu_statistics(outputs, references)

        def bleu(indices: Sequence[int]) -> float:
            if len(indices) == 0:
                return 0.0
            return bleu_from_statistics([int(v) for v in stats[np.asarray(indices, dtype=int)].sum(axis=0)])

        return bleu
    want = [normalize_label(r) for r in references]
    got = [normalize_label(o) for o in outputs]
    codes = {label: code for code, label in enumerate(sorted(set(want)))}
    want_codes = np.array([codes[label] for label in want], dtype=int)
    # a reply that is no reference label gets the code one past the last, which macro_f1_from_codes ignores
    got_codes = np.array([codes.get(label, len(codes)) for label in got], dtype=int)

    def macro_f1_of(indices: Sequence[int]) -> float:
        chosen = np.asarray(indices, dtype=int)
        return macro_f1_from_codes(got_codes[chosen], want_codes[chosen], len(codes))

    return macro_f1_of
