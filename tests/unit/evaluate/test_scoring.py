"""Picking and computing a task's metrics for the ladder: defaults, per-example scores, the user's scorer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from hone.errors import HoneError
from hone.evaluate.metrics import classification_accuracy, corpus_bleu, macro_f1, score_json_outputs, token_f1
from hone.evaluate.scoring import JSON_DEFAULT, METRICS, TEXT_DEFAULT, MetricSpec, load_scorer, score_examples

SCHEMA = {
    "type": "object",
    "required": ["category", "priority"],
    "additionalProperties": False,
    "properties": {"category": {"enum": ["billing", "bug"]}, "priority": {"enum": ["low", "high"]}},
}
REF = json.dumps({"category": "billing", "priority": "high"})


# --- score_examples ------------------------------------------------------------------------------------

JSON_OUTPUTS = [
    '{"category": "billing", "priority": "high"}',  # exact
    '{"category": "billing", "priority": "urgent"}',  # valid JSON, breaks schema enum
    "not json",
    '{"category": "bug", "priority": "high", "extra": 1}',  # breaks additionalProperties
]


def test_score_examples_json_default_matches_aggregate_scores() -> None:
    scores = score_examples(JSON_OUTPUTS, [REF] * 4, MetricSpec(json_schema=SCHEMA))
    assert scores.names == [
        "json_valid",
        "schema_valid",
        "category_accuracy",
        "priority_accuracy",
        "mean_field_accuracy",
        "field_f1",
        "exact_match",
    ]
    assert scores.per_example["json_valid"] == [1.0, 1.0, 0.0, 1.0]
    assert scores.per_example["schema_valid"] == [1.0, 0.0, 0.0, 0.0]
    assert scores.per_example["exact_match"] == [1.0, 0.0, 0.0, 0.0]
    assert scores.per_example["mean_field_accuracy"] == [1.0, 0.5, 0.0, 0.5]
    # field F1 of the last reply: 1 of 3 pairs right, 1 of 2 found -> 0.4
    assert scores.per_example["field_f1"] == pytest.approx([1.0, 0.5, 0.0, 0.4])
    aggregate = score_json_outputs(JSON_OUTPUTS, [REF] * 4, SCHEMA)
    for name in ("json_valid", "schema_valid", "exact_match", "mean_field_accuracy"):
        assert scores.value(name) == pytest.approx(aggregate[name])
    assert scores.value("category_accuracy") == pytest.approx(aggregate["field_accuracy"]["category"])
    assert scores.value("exact_match", [0, 0, 1]) == pytest.approx(2 / 3)  # repeats count, as resamples do


def test_score_examples_json_without_schema_uses_reference_keys() -> None:
    scores = score_examples(['{"priority": "high"}'], [REF], MetricSpec())
    assert "schema_valid" not in scores.names
    assert scores.per_example["category_accuracy"] == [0.0]
    assert scores.per_example["priority_accuracy"] == [1.0]


def test_score_examples_text_default() -> None:
    outputs = ["The cat sat.", "a dog ran", "hello"]
    references = ["the cat sat", "a cat sat down", "hello"]
    scores = score_examples(outputs, references, MetricSpec())
    assert scores.names == ["exact_match", "normalized_exact_match", "token_f1", "rouge_l", "chrf", "bleu"]
    reordered = score_examples(outputs, references, MetricSpec(names=["bleu", "token_f1", "bleu"]))
    assert reordered.names == ["bleu", "token_f1"]  # the order asked for, each once
    assert scores.per_example["exact_match"] == [0.0, 0.0, 1.0]  # stripped string equality on text tasks
    assert scores.per_example["normalized_exact_match"] == [1.0, 0.0, 1.0]
    assert scores.per_example["token_f1"][1] == pytest.approx(token_f1("a dog ran", "a cat sat down"))
    assert list(scores.corpus) == ["bleu"]
    assert scores.value("bleu") == pytest.approx(corpus_bleu(outputs, references))
    assert scores.value("bleu", [2, 2]) == pytest.approx(corpus_bleu(["hello"] * 2, ["hello"] * 2))
    assert scores.statistic("chrf").shape == (3,)
    with pytest.raises(KeyError, match="was not computed"):
        scores.value("field_f1")


def test_corpus_closures_equal_the_plain_functions_on_resamples() -> None:
    rng = np.random.default_rng(0)
    labels = ["billing", "bug", "account", "how_to"]
    references = [labels[i] for i in rng.integers(0, 4, 60)]
    outputs = [labels[i] if rng.random() < 0.6 else "garbage" for i in rng.integers(0, 4, 60)]
    texts = [" ".join(rng.choice(["a", "b", "c", "d", "e"], size=6)) for _ in range(60)]
    refs = [" ".join(rng.choice(["a", "b", "c", "d", "e"], size=6)) for _ in range(60)]
    labelled = score_examples(outputs, references, MetricSpec(names=["accuracy", "macro_f1"]))
    generated = score_examples(texts, refs, MetricSpec(names=["bleu"]))
    for _ in range(5):
        rows = rng.integers(0, 60, 60)
        want_f1 = macro_f1([outputs[i] for i in rows], [references[i] for i in rows])
        assert labelled.value("macro_f1", rows) == pytest.approx(want_f1)
        want_bleu = corpus_bleu([texts[i] for i in rows], [refs[i] for i in rows])
        assert generated.value("bleu", rows) == pytest.approx(want_bleu)
    assert labelled.value("accuracy") == pytest.approx(classification_accuracy(outputs, references))


def test_score_examples_regex_and_explicit_field() -> None:
    spec = MetricSpec(names=["regex", "priority_accuracy"], regex=r"\{.*\}", regex_fullmatch=True)
    scores = score_examples(JSON_OUTPUTS, [REF] * 4, spec)
    assert scores.names == ["regex", "priority_accuracy"]
    assert scores.per_example["regex"] == [1.0, 1.0, 0.0, 1.0]
    assert scores.per_example["priority_accuracy"] == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("spec", "references", "message"),
    [
        (MetricSpec(names=["bogus"]), ["x"], "unknown metric 'bogus'; available: exact_match"),
        (MetricSpec(names=["schema_valid"]), [REF], "needs a JSON Schema"),
        (MetricSpec(names=["field_f1"]), ["plain text"], "needs every reference to be a JSON object"),
        (MetricSpec(names=["regex"]), ["x"], "needs a regular expression"),
        (MetricSpec(names=["regex"], regex="("), ["x"], "not a valid regular expression"),
        (MetricSpec(names=["scorer"]), ["x"], "needs a scoring function"),
        (MetricSpec(names=["schema_valid"], json_schema={"type": 5}), [REF], "JSON Schema is not valid"),
    ],
)
def test_score_examples_errors_say_what_is_missing(
    spec: MetricSpec, references: list[str], message: str
) -> None:
    with pytest.raises(HoneError, match=re.escape(message)):
        score_examples(["x"] * len(references), references, spec)


def test_every_default_metric_is_documented() -> None:
    assert {*JSON_DEFAULT, *TEXT_DEFAULT} <= set(METRICS)
    assert all(description for description in METRICS.values())


# --- user scorer ---------------------------------------------------------------------------------------

SCORER_FILE = """
from dataclasses import dataclass


@dataclass
class Weights:  # a dataclass needs its module in sys.modules while the file is imported
    hit: float = 1.0


def overlap(output, reference):
    return len(set(output) & set(reference)) / max(len(set(reference)), 1)

def too_big(output, reference):
    return 2

def words(output, reference):
    return "high"

def explodes(output, reference):
    raise RuntimeError("boom")

THRESHOLD = 0.5
"""


@pytest.fixture
def scorer_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_scorer.py"
    path.write_text(SCORER_FILE, encoding="utf-8")
    return path


def test_user_scorer_is_loaded_and_applied(scorer_file: Path) -> None:
    scorer = load_scorer(f"{scorer_file}:overlap")
    assert scorer("ab", "abcd") == pytest.approx(0.5)
    relative = load_scorer("my_scorer.py:overlap", base=scorer_file.parent)
    spec = MetricSpec(names=["scorer"], scorer=relative, scorer_name="my_scorer.py:overlap")
    scores = score_examples(["ab", "xyz"], ["abcd", "abcd"], spec)
    assert scores.per_example["scorer"] == [pytest.approx(0.5), 0.0]
    defaults = score_examples(["ab"], ["abcd"], MetricSpec(scorer=relative))
    assert "scorer" in defaults.names  # a configured scorer joins the default metrics


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("missing.py:overlap", "missing.py: scorer file not found (looking for function 'overlap')"),
        (
            "my_scorer.py:nothing",
            "my_scorer.py: no function 'nothing' (functions defined there: explodes, overlap, too_big, words",
        ),
        ("my_scorer.py:THRESHOLD", "my_scorer.py: 'THRESHOLD' is a float, not a function"),
        ("my_scorer.py", "expected 'path/to/file.py:function_name'"),
    ],
)
def test_bad_scorer_references_name_the_file(scorer_file: Path, reference: str, message: str) -> None:
    with pytest.raises(HoneError, match=re.escape(message)):
        load_scorer(reference, base=scorer_file.parent)


def test_scorer_that_does_not_import_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def score(output, reference)\n    return 1\n", encoding="utf-8")
    with pytest.raises(HoneError, match=r"broken\.py: importing the scorer failed: SyntaxError"):
        load_scorer(f"{broken}:score")


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("too_big", "scorer my_scorer.py:too_big returned 2 for example 1; expected a number in [0, 1]"),
        ("words", "scorer my_scorer.py:words returned 'high' for example 1"),
        ("explodes", "scorer my_scorer.py:explodes failed on example 1: RuntimeError: boom"),
    ],
)
def test_bad_scores_name_the_scorer_and_example(scorer_file: Path, function: str, message: str) -> None:
    scorer = load_scorer(f"{scorer_file}:{function}")
    good_first = lambda output, reference: 1.0 if output == "ok" else scorer(output, reference)  # noqa: E731
    spec = MetricSpec(names=["scorer"], scorer=good_first, scorer_name=f"my_scorer.py:{function}")
    with pytest.raises(HoneError, match=re.escape(message)):
        score_examples(["ok", "bad"], ["x", "x"], spec)
