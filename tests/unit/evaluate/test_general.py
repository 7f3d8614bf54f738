from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from hone.errors import HoneError
from hone.evaluate.general import (
    CATEGORIES,
    PROBE_FILE,
    TEXT_FILE,
    GeneralResult,
    Probe,
    general_check,
    general_delta,
    load_probes,
    normalise,
    parse_number,
    perplexity,
    probe_correct,
    probe_prompt,
    select_probes,
)


def probe(check: str, answers: list[str], pattern: str | None = None) -> Probe:
    return Probe("t-001", "facts", "?", tuple(answers), check, pattern)


@pytest.fixture(scope="module")
def shipped() -> list[Probe]:
    return load_probes()


def test_shipped_probes_validate_with_unique_ids(shipped: list[Probe]) -> None:
    raw_lines = [line for line in PROBE_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(shipped) == len(raw_lines) >= 280
    assert len({p.id for p in shipped}) == len(shipped)
    assert all(p.id.startswith(f"{p.category}-") for p in shipped)


def test_shipped_categories_are_the_four_and_balanced(shipped: list[Probe]) -> None:
    counts = Counter(p.category for p in shipped)
    assert set(counts) == set(CATEGORIES)
    assert min(counts.values()) >= 60
    assert max(counts.values()) - min(counts.values()) <= 10


def test_every_shipped_answer_passes_its_own_check(shipped: list[Probe]) -> None:
    """The answers double as sample replies: a probe whose own answer fails its check can never be right."""
    failing = [(p.id, answer) for p in shipped for answer in p.answers if not probe_correct(answer, p)]
    assert failing == []


def test_shipped_reading_answers_come_from_the_passage(shipped: list[Probe]) -> None:
    for item in (p for p in shipped if p.category == "reading"):
        passage, _, question = item.question.partition("\n\nQuestion: ")
        assert question, item.id
        assert normalise(item.answers[0]) in normalise(passage), item.id


def test_shipped_arithmetic_answers_are_right(shipped: list[Probe]) -> None:
    """Recompute the bare sums from their wording; the word problems were generated the same way."""
    operations = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "times": lambda a, b: a * b,
        "divided by": lambda a, b: a / b,
    }
    checked = 0
    for item in (p for p in shipped if p.category == "arithmetic"):
        match = re.match(r"What is (\d+) (\+|-|times|divided by) (\d+)(?: \+ (\d+))?\?", item.question)
        if not match:
            continue
        value = operations[match[2]](int(match[1]), int(match[3])) + int(match[4] or 0)
        assert value == float(item.answers[0]), item.id
        checked += 1
    assert checked >= 40


@pytest.mark.parametrize(
    ("output", "answers", "expected"),
    [
        ("The capital is Paris.", ["Paris"], True),
        ("paris", ["Paris"], True),
        ("Parisian cafés are nice.", ["Paris"], False),  # whole words only
        ("It is Leonardo da Vinci's work.", ["da Vinci"], True),
        ("The Buenos  Aires region", ["Buenos Aires"], True),
        ("Water freezes at 0°C.", ["0", "zero"], True),
        ("Water boils at 100 degrees.", ["0", "zero"], False),
        ("The largest is the blue whale!", ["blue whale"], True),
        ("", ["Paris"], False),
    ],
)
def test_contains_check(output: str, answers: list[str], expected: bool) -> None:
    assert probe_correct(output, probe("contains", answers)) is expected


@pytest.mark.parametrize(
    ("output", "answers", "expected"),
    [
        ("Yes.", ["yes"], True),
        ("  YES  ", ["yes"], True),
        ("Yes, it is.", ["yes"], False),
        ("The cat sat on the mat.", ["the cat sat on the mat"], True),
        ("Little", ["small", "little"], True),
        ("god", ["dog"], False),
    ],
)
def test_exact_check(output: str, answers: list[str], expected: bool) -> None:
    assert probe_correct(output, probe("exact", answers)) is expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("12", True),
        ("The answer is 12.", True),
        ("12.0", True),
        ("5 + 7 = 12", True),  # a restated sum: the number after "=" is the answer
        ("5 + 7 = 13", False),
        ("48 divided by 4 equals 12.", True),
        ("84 divided by 7 is 12", True),
        ("Each gets 12 sweets, which is half of 24.", True),  # "is" after no sum: the first number
        ("The answer is 3 x 4 = 12", True),
        ("13, or maybe 12", False),  # the first number counts
        ("twelve", False),
        ("CO2 and 12", True),  # "CO2" holds no number of its own
        ("120", False),
    ],
)
def test_number_check(output: str, expected: bool) -> None:
    assert probe_correct(output, probe("number", ["12"])) is expected


def test_parse_number_reads_separators_and_signs() -> None:
    assert parse_number("about 1,250 km") == 1250.0
    assert parse_number("-3 degrees") == -3.0
    assert parse_number("3.5 cups") == 3.5
    assert parse_number("300km") == 300.0
    assert parse_number("no digits") is None


@pytest.mark.parametrize(
    ("output", "expected"),
    [("APPLE", True), ("Sure: APPLE.", True), ("Apple", False), ("PINEAPPLE", False)],
)
def test_regex_check_is_case_sensitive_by_default(output: str, expected: bool) -> None:
    assert probe_correct(output, probe("regex", ["APPLE"], r"\bAPPLE\b")) is expected


def test_probe_prompt_is_system_then_user() -> None:
    messages = probe_prompt("What is 2 + 2?")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == "What is 2 + 2?"
    assert "brief" in messages[0]["content"].lower()


def test_select_probes_takes_categories_in_turn(shipped: list[Probe]) -> None:
    chosen = select_probes(shipped, 8)
    assert [p.category for p in chosen] == list(CATEGORIES) * 2
    assert select_probes(shipped, None) == shipped
    assert select_probes(shipped, 10_000) == shipped


GOOD = {"id": "x-1", "category": "facts", "question": "Q?", "answers": ["A"], "check": "contains"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"answers": []}, "answers"),
        ({"answers": "A"}, "answers"),
        ({"check": "fuzzy"}, "check"),
        ({"question": ""}, "question"),
        ({"check": "regex"}, "pattern"),  # regex without a pattern
        ({"check": "regex", "pattern": "(unclosed"}, "pattern"),
        ({"pattern": "A"}, "pattern"),  # a pattern on a non-regex check
        ({"check": "number", "answers": ["twelve"]}, "answers"),
        ({"hint": "x"}, "hint"),
    ],
)
def test_bad_probe_line_names_file_line_and_field(tmp_path: Path, change: dict, field: str) -> None:
    path = tmp_path / "probes.jsonl"
    second = {**GOOD, "id": "x-2", **change}
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(second) + "\n", encoding="utf-8")
    with pytest.raises(HoneError) as error:
        load_probes(path)
    assert f"{path} line 2: {field}:" in str(error.value)


def test_bad_json_and_duplicate_ids_are_located(tmp_path: Path) -> None:
    path = tmp_path / "probes.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n{not json\n", encoding="utf-8")
    with pytest.raises(HoneError, match=r"probes.jsonl line 3: not valid JSON"):
        load_probes(path)
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    with pytest.raises(HoneError, match=r"line 2: id: duplicate id 'x-1' \(first on line 1\)"):
        load_probes(path)


def test_general_text_is_a_few_thousand_words() -> None:
    words = len(TEXT_FILE.read_text(encoding="utf-8").split())
    assert 3000 <= words <= 4000


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def test_perplexity_matches_a_plain_forward_pass(tiny_model, tokenizer) -> None:
    """Batched, padded windows give the same number as scoring each window on its own."""
    text = TEXT_FILE.read_text(encoding="utf-8")[:3000]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    window = 64
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids), window):
            chunk = torch.tensor([ids[start : start + window]])
            if chunk.shape[1] < 2:
                continue
            loss = tiny_model(input_ids=chunk, labels=chunk).loss.item()
            total += loss * (chunk.shape[1] - 1)
            count += chunk.shape[1] - 1
    expected = math.exp(total / count)
    assert perplexity(tiny_model, tokenizer, text, window=window, batch_size=3) == pytest.approx(
        expected, rel=1e-4
    )


def test_general_check_on_the_tiny_model(tiny_model, tokenizer) -> None:
    result = general_check(tiny_model, tokenizer, batch_size=8, max_new_tokens=4, limit=8)
    assert 0.0 <= result.probe_accuracy <= 1.0
    assert len(result.per_probe) == len(result.outputs) == 8
    assert set(result.by_category) == set(CATEGORIES)
    assert all(0.0 <= value <= 1.0 for value in result.by_category.values())
    assert math.isfinite(result.perplexity) and result.perplexity > 1.0


def test_general_delta_is_other_minus_base() -> None:
    base = GeneralResult(0.5, {"facts": 0.75, "arithmetic": 0.25}, 20.0, [True, False, True, False])
    other = GeneralResult(0.25, {"facts": 0.5, "arithmetic": 0.0}, 23.5, [True, False, False, False])
    assert general_delta(base, other) == {
        "probe_accuracy": 0.25,
        "probe_accuracy_by_category": {"facts": 0.5, "arithmetic": 0.0},
        "perplexity": 23.5,
        "delta_probe_accuracy": -0.25,
        "delta_perplexity": 3.5,
    }
    assert general_delta(base, base)["delta_probe_accuracy"] == 0.0


def test_general_delta_refuses_different_probe_sets() -> None:
    base = GeneralResult(0.5, {}, 20.0, [True, False])
    other = GeneralResult(0.5, {}, 20.0, [True, False, True])
    with pytest.raises(HoneError, match="same limit"):
        general_delta(base, other)


@pytest.mark.slow
def test_real_model_answers_some_probes() -> None:
    from hone.models.resolve import load_model, load_tokenizer, resolve_model

    path = resolve_model("smollm2-135m-instruct")
    model, tokenizer = load_model(path), load_tokenizer(path)
    began = time.perf_counter()
    result = general_check(model, tokenizer, batch_size=16, limit=40)
    print(
        f"real model: accuracy {result.probe_accuracy:.3f} {result.by_category} "
        f"perplexity {result.perplexity:.2f} in {time.perf_counter() - began:.0f} s"
    )
    assert result.probe_accuracy > 0.1
    assert result.by_category["facts"] > 0.5
    assert 1.0 < result.perplexity < 100.0
