"""Task metrics: pure functions over a model's replies and the reference replies, no I/O.

Per-example functions return one number per reply, so the evaluation ladder can average them, bootstrap
them and compare two models example by example. The corpus-level metrics (BLEU, macro-F1) also come in a
form a bootstrap can call a thousand times: BLEU from per-example n-gram counts, macro-F1 from integer-coded
labels. Which of these a task gets, and how they are kept for resampling, is hone.evaluate.scoring's part.
Every metric is higher-is-better; BLEU and chrF keep sacrebleu's 0-100 scale (the numbers people quote),
everything else is in [0, 1].
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from jsonschema import Draft202012Validator
from sacrebleu.metrics import BLEU, CHRF
from sklearn.metrics import accuracy_score, f1_score

FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)

_BLEU = BLEU()
_SENTENCE_BLEU = BLEU(effective_order=True)  # short replies have no 4-grams; sacrebleu's advice
_CHRF = CHRF()
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
_WORD = re.compile(r"\w+")


# --- JSON -------------------------------------------------------------------------------------------------


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The reply as a JSON object, or None. Surrounding whitespace and one ```json fence are allowed."""
    stripped = text.strip()
    fenced = FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    try:
        value = json.loads(stripped)
    except (RecursionError, ValueError):  # not JSON; nested past the parser's depth; a 5000-digit number
        return None
    return value if isinstance(value, dict) else None


def schema_valid(obj: dict[str, Any] | None, validator: Draft202012Validator | None) -> bool:
    if obj is None:
        return False
    return validator is None or validator.is_valid(obj)


def values_equal(got: Any, want: Any) -> bool:
    """Field values match when equal; strings ignore case and surrounding spaces ("Billing" is "billing")."""
    if isinstance(got, str) and isinstance(want, str):
        return got.strip().lower() == want.strip().lower()
    return bool(got == want)


def field_accuracy(predicted: dict[str, Any] | None, reference: dict[str, Any], field: str) -> float:
    """1.0 when the field is present and equal to the reference's (strings compared case-insensitively)."""
    if predicted is None or field not in predicted:
        return 0.0
    return float(values_equal(predicted[field], reference.get(field)))


def exact_match(predicted: dict[str, Any] | None, reference: dict[str, Any]) -> float:
    """1.0 when the parsed object equals the reference object (key order does not matter)."""
    return float(predicted is not None and predicted == reference)


def flatten_object(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}.

    An empty nested object stays a value of its own, so `{"a": {}}` still has one field to get right.
    """
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_object(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def field_f1(predicted: dict[str, Any] | None, reference: dict[str, Any]) -> float:
    """F1 over (key, value) pairs: partial credit for an object with some fields right.

    Precision is the share of the reply's pairs found in the reference, recall the share of the reference's
    pairs found in the reply; values are compared as `field_accuracy` does. Two empty objects score 1.
    """
    if predicted is None:
        return 0.0
    got, want = flatten_object(predicted), flatten_object(reference)
    if not got and not want:
        return 1.0
    matched = sum(1 for key, value in got.items() if key in want and values_equal(value, want[key]))
    if matched == 0:
        return 0.0
    precision, recall = matched / len(got), matched / len(want)
    return 2 * precision * recall / (precision + recall)


def score_json_outputs(
    outputs: Sequence[str], references: Sequence[str], schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Aggregate JSON validity, schema adherence, per-field accuracy and exact match over a test set.

    Fields scored are the schema's `properties` when a schema is given, else the reference's keys.
    """
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} references")
    validator = Draft202012Validator(schema) if schema else None
    parsed_refs = [json.loads(ref) for ref in references]
    fields = list(schema.get("properties", {})) if schema else sorted({k for ref in parsed_refs for k in ref})
    totals = {"json_valid": 0.0, "schema_valid": 0.0, "exact_match": 0.0}
    per_field = dict.fromkeys(fields, 0.0)
    for output, reference in zip(outputs, parsed_refs, strict=True):
        predicted = parse_json_object(output)
        totals["json_valid"] += predicted is not None
        totals["schema_valid"] += schema_valid(predicted, validator)
        totals["exact_match"] += exact_match(predicted, reference)
        for name in fields:
            per_field[name] += field_accuracy(predicted, reference, name)
    count = max(len(outputs), 1)
    scores: dict[str, Any] = {name: value / count for name, value in totals.items()}
    scores["field_accuracy"] = {name: value / count for name, value in per_field.items()}
    scores["mean_field_accuracy"] = sum(scores["field_accuracy"].values()) / max(len(fields), 1)
    scores["count"] = len(outputs)
    return scores


# --- text -------------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop punctuation and the articles a/an/the, single spaces."""
    lowered = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", lowered).split())


def normalize_label(text: str) -> str:
    """A class label for accuracy and macro-F1: lowercase, no surrounding punctuation, single spaces.

    Lighter than `normalize_text` on purpose: articles are kept, so the multiple-choice answer "A" stays.
    """
    return " ".join(text.lower().split()).strip(string.punctuation + " ")


def exact_match_text(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


def normalized_exact_match(prediction: str, reference: str) -> float:
    return float(normalize_text(prediction) == normalize_text(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1: overlap of the normalised token multisets. Two empty answers score 1, one empty 0."""
    got, want = normalize_text(prediction).split(), normalize_text(reference).split()
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def longest_common_subsequence(first: Sequence[str], second: Sequence[str]) -> int:
    """Length of the LCS by dynamic programming, one row at a time (O(len(first) * len(second)))."""
    previous = [0] * (len(second) + 1)
    for item in first:
        current = [0]
        for column, other in enumerate(second, start=1):
            current.append(previous[column - 1] + 1 if item == other else max(previous[column], current[-1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 on lowercased word tokens (punctuation dropped); two empty texts score 1."""
    got, want = _WORD.findall(prediction.lower()), _WORD.findall(reference.lower())
    if not got or not want:
        return float(got == want)
    common = longest_common_subsequence(got, want)
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def sentence_bleu(prediction: str, reference: str) -> float:
    """BLEU of one reply (0-100), with effective n-gram order so short replies are not zeroed."""
    return min(100.0, _SENTENCE_BLEU.sentence_score(prediction, [reference]).score)


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100): n-gram counts are summed over the set before the geometric mean."""
    return min(100.0, _BLEU.corpus_score(list(predictions), [list(references)]).score)


def sentence_chrf(prediction: str, reference: str) -> float:
    return _CHRF.sentence_score(prediction, [reference]).score


def corpus_chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    return _CHRF.corpus_score(list(predictions), [list(references)]).score


def classification_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of replies whose label (see `normalize_label`) equals the reference label."""
    return float(
        accuracy_score([normalize_label(r) for r in references], [normalize_label(p) for p in predictions])
    )


def macro_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Macro-F1 over the labels that occur in the references.

    A reply that is no known label counts as a miss for the true class, not as a class of its own: otherwise
    every distinct malformed reply would add a zero to the average.
    """
    want = [normalize_label(r) for r in references]
    got = [normalize_label(p) for p in predictions]
    return float(f1_score(want, got, labels=sorted(set(want)), average="macro", zero_division=0))


def regex_match(text: str, pattern: str | re.Pattern[str], fullmatch: bool = False) -> float:
    """1.0 when the reply (surrounding whitespace stripped) contains, or with `fullmatch` is, a match."""
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    stripped = text.strip()
    found = compiled.fullmatch(stripped) if fullmatch else compiled.search(stripped)
    return float(found is not None)


def mean_loss_and_perplexity(nll_sums: Sequence[float], token_counts: Sequence[int]) -> tuple[float, float]:
    """Token-weighted mean negative log-likelihood and its exponential, from per-example sums and counts."""
    tokens = sum(token_counts)
    if tokens <= 0:
        raise ValueError("no tokens to average the loss over")
    loss = math.fsum(nll_sums) / tokens
    return loss, math.exp(loss) if loss < 700 else math.inf


# --- corpus metrics for resampling ------------------------------------------------------------------------


def bleu_statistics(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Each reply's BLEU counts, one row per example: lengths, then matched and total n-grams per order.

    They are the counts sacrebleu's corpus score sums, taken from its public sentence score (effective order
    changes the score, not the counts). Rows summed over any examples give their corpus BLEU through
    `bleu_from_statistics`, as in sacrebleu's own significance tests, without tokenising again.
    """
    scores = [_SENTENCE_BLEU.sentence_score(p, [r]) for p, r in zip(predictions, references, strict=True)]
    return np.asarray([[s.sys_len, s.ref_len, *s.counts, *s.totals] for s in scores], dtype=np.int64)


def bleu_from_statistics(totals: list[int]) -> float:
    """Corpus BLEU (0-100) from summed `bleu_statistics` rows, in `corpus_bleu`'s settings."""
    order = _BLEU.max_ngram_order
    score = BLEU.compute_bleu(
        correct=totals[2 : 2 + order],
        total=totals[2 + order :],
        sys_len=totals[0],
        ref_len=totals[1],
        smooth_method=_BLEU.smooth_method,
        smooth_value=_BLEU.smooth_value,
        effective_order=_BLEU.effective_order,
        max_ngram_order=order,
    )
    return min(100.0, score.score)


def macro_f1_from_codes(predicted: np.ndarray, reference: np.ndarray, num_labels: int) -> float:
    """Macro-F1 over the reference labels present, from integer labels: `macro_f1`, vectorised."""
    if reference.size == 0:
        return 0.0
    size = num_labels + 1
    true_positive = np.bincount(reference[predicted == reference], minlength=size)[:num_labels]
    predicted_count = np.bincount(predicted, minlength=size)[:num_labels]
    reference_count = np.bincount(reference, minlength=size)[:num_labels]
    f1 = np.divide(
        2 * true_positive,
        predicted_count + reference_count,
        out=np.zeros(num_labels),
        where=(predicted_count + reference_count) > 0,
    )
    return float(f1[reference_count > 0].mean())
