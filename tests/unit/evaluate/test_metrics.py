from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hone.evaluate.metrics import (
    bleu_from_statistics,
    bleu_statistics,
    classification_accuracy,
    corpus_bleu,
    corpus_chrf,
    exact_match,
    exact_match_text,
    field_accuracy,
    field_f1,
    flatten_object,
    longest_common_subsequence,
    macro_f1,
    macro_f1_from_codes,
    mean_loss_and_perplexity,
    normalize_label,
    normalize_text,
    normalized_exact_match,
    parse_json_object,
    regex_match,
    rouge_l,
    score_json_outputs,
    sentence_bleu,
    sentence_chrf,
    token_f1,
)

SCHEMA = {
    "type": "object",
    "required": ["category", "priority"],
    "additionalProperties": False,
    "properties": {"category": {"enum": ["billing", "bug"]}, "priority": {"enum": ["low", "high"]}},
}
REF = json.dumps({"category": "billing", "priority": "high"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  {"a": 1}\n', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ("[1]", None),
        ('{"a": 1} trailing', None),
        ("", None),
        ("[" * 100_000, None),  # a degenerate model's output nests past the parser's depth
        ('{"a": ' + "9" * 5000 + "}", None),
    ],
    ids=lambda value: value[:20] if isinstance(value, str) else None,
)
def test_parse_json_object(text: str, expected: object) -> None:
    assert parse_json_object(text) == expected


def test_field_accuracy_and_exact_match() -> None:
    ref = {"category": "billing", "priority": "high"}
    assert field_accuracy({"category": " Billing "}, ref, "category") == 1.0
    assert field_accuracy({"category": "bug"}, ref, "category") == 0.0
    assert field_accuracy(None, ref, "category") == 0.0
    assert field_accuracy({}, ref, "priority") == 0.0
    assert exact_match({"priority": "high", "category": "billing"}, ref) == 1.0
    assert exact_match({"category": "billing"}, ref) == 0.0


def test_score_json_outputs_hand_computed() -> None:
    outputs = [
        '{"category": "billing", "priority": "high"}',  # exact
        '{"category": "billing", "priority": "urgent"}',  # valid JSON, breaks schema enum
        "not json",
        '{"category": "bug", "priority": "high", "extra": 1}',  # breaks additionalProperties
    ]
    scores = score_json_outputs(outputs, [REF] * 4, SCHEMA)
    assert scores["count"] == 4
    assert scores["json_valid"] == pytest.approx(3 / 4)
    assert scores["schema_valid"] == pytest.approx(1 / 4)
    assert scores["exact_match"] == pytest.approx(1 / 4)
    assert scores["field_accuracy"] == {"category": pytest.approx(2 / 4), "priority": pytest.approx(2 / 4)}
    assert scores["mean_field_accuracy"] == pytest.approx(0.5)


def test_score_without_schema_uses_reference_keys() -> None:
    scores = score_json_outputs(['{"priority": "high"}'], [REF])
    assert scores["schema_valid"] == 1.0
    assert scores["field_accuracy"] == {"category": 0.0, "priority": 1.0}


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 outputs for 1 references"):
        score_json_outputs(["{}", "{}"], [REF])


# --- text metrics, hand-computed ---------------------------------------------------------------------


def test_normalisation_is_squad_style() -> None:
    assert normalize_text("  The Cat, sat!  on a  mat. ") == "cat sat on mat"
    assert normalized_exact_match("The  Paris!", "paris") == 1.0
    assert normalized_exact_match("Answer: Paris", "paris") == 0.0
    assert exact_match_text(" Paris\n", "Paris") == 1.0
    assert exact_match_text("paris", "Paris") == 0.0


def test_token_f1_by_hand() -> None:
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down]; 2 shared: P = 2/2, R = 2/3
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert token_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # multiset overlap is 1
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("the", "a") == 1.0  # both normalise to nothing
    assert token_f1("", "cat") == 0.0


def test_rouge_l_by_hand() -> None:
    # LCS "the cat was under the bed" = 6 tokens; P = 6/7, R = 6/6; F = 2PR/(P+R) = 12/13
    assert rouge_l("The cat was found under the bed.", "the cat was under the bed") == pytest.approx(12 / 13)
    assert longest_common_subsequence(list("abcd"), list("acbd")) == 3
    assert rouge_l("a b c d", "a c b d") == pytest.approx(0.75)
    assert rouge_l("x y", "a b") == 0.0
    assert rouge_l("", "") == 1.0


def test_bleu_and_chrf_extremes() -> None:
    sentence = "the quick brown fox jumps over the lazy dog"
    assert sentence_bleu(sentence, sentence) == pytest.approx(100.0)
    assert sentence_bleu("hello there", "hello there") == pytest.approx(
        100.0
    )  # effective order: short is fine
    assert sentence_bleu("alpha beta gamma", "one two three") == 0.0
    assert corpus_bleu([sentence, "a b c d e"], [sentence, "a b c d e"]) == pytest.approx(100.0)
    assert corpus_bleu(["alpha beta gamma delta"], ["one two three four"]) == 0.0
    assert sentence_chrf(sentence, sentence) == pytest.approx(100.0)
    assert sentence_chrf("xyz", "abc") == 0.0
    assert corpus_chrf([sentence], [sentence]) == pytest.approx(100.0)
    partial = sentence_bleu("the quick brown fox jumps over a lazy cat", sentence)
    assert 0.0 < partial < 100.0


def test_classification_accuracy_and_macro_f1_by_hand() -> None:
    references = ["Billing", "billing", "billing.", "bug", "bug", "account"]
    predictions = ["billing", "billing", "bug", "Bug", "account", "account"]
    # billing: TP 2, predicted 2, true 3 -> P 1, R 2/3, F1 0.8; bug: TP 1, predicted 2, true 2 -> F1 0.5;
    # account: TP 1, predicted 2, true 1 -> P 1/2, R 1, F1 2/3. Macro = (0.8 + 0.5 + 2/3) / 3 = 59/90.
    assert macro_f1(predictions, references) == pytest.approx(59 / 90)
    assert classification_accuracy(predictions, references) == pytest.approx(4 / 6)
    assert normalize_label(" A. ") == "a"  # articles are labels here, unlike normalize_text
    # a reply that is no label at all is a miss for the true class, not a class of its own
    assert macro_f1(["spam", "bug"], ["billing", "bug"]) == pytest.approx((0.0 + 1.0) / 2)


def test_field_f1_by_hand() -> None:
    reference = {"category": "Billing", "priority": "high"}
    # 1 of the reply's 3 pairs is right (P 1/3), 1 of the reference's 2 found (R 1/2): F1 = 0.4
    assert field_f1({"category": "billing ", "priority": "low", "extra": 1}, reference) == pytest.approx(0.4)
    assert field_f1({"category": "billing", "priority": "high"}, reference) == 1.0
    assert field_f1(None, reference) == 0.0
    assert field_f1({"other": 1}, reference) == 0.0
    # nested keys are dotted: {a.b, a.c} vs {a.b, d} share a.b -> P 1/2, R 1/2
    assert flatten_object({"a": {"b": 1, "c": {"d": 2}}, "e": {}}) == {"a.b": 1, "a.c.d": 2, "e": {}}
    assert field_f1({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}, "d": 3}) == pytest.approx(0.5)
    assert field_f1({}, {}) == 1.0


def test_regex_match() -> None:
    assert regex_match("Answer: 42\n", r"\d+") == 1.0
    assert regex_match("Answer: 42\n", r"\d+", fullmatch=True) == 0.0
    assert regex_match("  42 \n", r"\d+", fullmatch=True) == 1.0
    assert regex_match("none", r"\d+") == 0.0


def test_mean_loss_and_perplexity_is_token_weighted() -> None:
    loss, perplexity = mean_loss_and_perplexity([2.0, 4.0], [1, 3])  # 6 nats over 4 tokens
    assert loss == pytest.approx(1.5)
    assert perplexity == pytest.approx(math.exp(1.5))
    with pytest.raises(ValueError, match="no tokens"):
        mean_loss_and_perplexity([], [])


def test_bleu_statistics_summed_over_any_examples_give_their_corpus_bleu() -> None:
    replies = ["the cat sat on the mat", "a dog ran", "hello there"]
    references = ["the cat sat on a mat", "the dog ran away", "hello there"]
    stats = bleu_statistics(replies, references)
    assert stats.shape == (3, 2 + 2 * 4)  # lengths, then matches and totals for 1- to 4-grams
    assert stats[2].tolist() == [2, 2, 2, 1, 0, 0, 2, 1, 0, 0]  # "hello there": 2 unigrams, 1 bigram
    assert bleu_from_statistics([int(v) for v in stats.sum(axis=0)]) == pytest.approx(
        corpus_bleu(replies, references)
    )
    assert bleu_from_statistics([int(v) for v in stats[[0, 0, 1]].sum(axis=0)]) == pytest.approx(
        corpus_bleu([replies[0], replies[0], replies[1]], [references[0], references[0], references[1]])
    )


def test_macro_f1_from_codes_by_hand() -> None:
    # labels 0 and 1; code 2 is a reply that is no label. Label 0: tp 1, 2 predicted, 2 true -> 0.5;
    # label 1: tp 1, 1 predicted, 2 true -> 2/3. Mean 7/12.
    predicted, reference = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0])
    assert macro_f1_from_codes(predicted, reference, 2) == pytest.approx(7 / 12)
    assert macro_f1_from_codes(predicted[:0], reference[:0], 2) == 0.0
