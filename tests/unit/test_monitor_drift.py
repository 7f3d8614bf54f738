"""Input drift: the two-sample test and the out-of-distribution share, on synthetic and real prompts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hone.errors import HoneError
from hone.operate.drift import binomial_tail, embed_prompts, measure_drift

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support-tickets"
DIMENSIONS = 32


def on_sphere(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def mixture(rng: np.random.Generator, rows: int, centres: np.ndarray, spread: float = 0.1) -> np.ndarray:
    """Rows of a Gaussian mixture around `centres`, projected onto the unit sphere."""
    picked = centres[rng.integers(len(centres), size=rows)]
    return on_sphere(picked + spread * rng.standard_normal((rows, centres.shape[1])))


@pytest.fixture
def centres() -> np.ndarray:
    return on_sphere(np.random.default_rng(0).standard_normal((4, DIMENSIONS)))


def test_same_distribution_is_not_flagged(centres: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    drift = measure_drift(mixture(rng, 500, centres), mixture(rng, 300, centres))
    assert drift.mmd_p_value > 0.1
    assert drift.ood_p_value > 0.1
    assert abs(drift.ood_share - drift.ood_expected_share) < 0.04
    assert drift.ood_expected_share == pytest.approx(0.05)
    assert drift.recent_mean_distance == pytest.approx(drift.reference_mean_distance, rel=0.1)


def test_a_new_cluster_is_flagged_and_its_rows_are_the_outliers(centres: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    familiar = mixture(rng, 250, centres)
    elsewhere = on_sphere(rng.standard_normal((1, DIMENSIONS)))
    new_topic = mixture(rng, 50, elsewhere)
    recent = np.concatenate([familiar, new_topic])
    drift = measure_drift(mixture(rng, 500, centres), recent, top=50)
    assert drift.mmd_p_value < 0.01
    assert drift.ood_p_value < 0.01
    assert drift.ood_share > 2 * drift.ood_expected_share
    assert drift.recent_mean_distance > drift.reference_mean_distance
    assert {index for index, _ in drift.outliers} == set(range(250, 300))
    distances = [distance for _, distance in drift.outliers]
    assert distances == sorted(distances, reverse=True)


def test_a_mean_shift_is_flagged(centres: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    nudge = 0.5 * on_sphere(rng.standard_normal((1, DIMENSIONS)))
    drift = measure_drift(mixture(rng, 500, centres), mixture(rng, 300, centres + nudge))
    assert drift.mmd_p_value < 0.01
    assert drift.ood_p_value < 0.01
    assert drift.ood_share > 2 * drift.ood_expected_share


def test_the_seed_decides_the_result(centres: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    reference, recent = mixture(rng, 2500, centres), mixture(rng, 100, centres)
    first = measure_drift(reference, recent, permutations=200, seed=5)
    assert measure_drift(reference, recent, permutations=200, seed=5) == first
    # the reference is subsampled for the test (2,500 rows over the cap), so another seed tests other rows
    assert first.tested_reference_rows == 2000 and first.reference_rows == 2500
    assert measure_drift(reference, recent, permutations=200, seed=6).mmd != first.mmd


def test_too_few_prompts_is_an_error(centres: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    with pytest.raises(HoneError, match="4 recent prompts are too few to test; need at least 5"):
        measure_drift(mixture(rng, 50, centres), mixture(rng, 4, centres))


def test_embeddings_must_be_comparable(centres: np.ndarray) -> None:
    rng = np.random.default_rng(6)
    with pytest.raises(HoneError, match="unit length"):
        measure_drift(mixture(rng, 50, centres), 2 * mixture(rng, 50, centres))
    with pytest.raises(HoneError, match="32 dimensions and recent ones 16"):
        measure_drift(mixture(rng, 50, centres), on_sphere(rng.standard_normal((50, 16))))


def test_binomial_tail_matches_hand_computed_values() -> None:
    assert binomial_tail(2, 3, 0.5) == pytest.approx(0.5)  # (3 + 1) / 8
    assert binomial_tail(1, 4, 0.1) == pytest.approx(1 - 0.9**4)
    assert binomial_tail(0, 10, 0.05) == 1.0
    assert binomial_tail(11, 10, 0.05) == 0.0


def test_to_dict_is_json() -> None:
    rng = np.random.default_rng(7)
    centres = on_sphere(rng.standard_normal((2, 8)))
    drift = measure_drift(mixture(rng, 20, centres), mixture(rng, 10, centres), permutations=20, top=3)
    loaded = json.loads(json.dumps(drift.to_dict()))
    assert loaded["recent_rows"] == 10
    assert [outlier["index"] for outlier in loaded["outliers"]] == [index for index, _ in drift.outliers]


OFF_TOPIC = [
    "How long should I rest a roast chicken before carving it?",
    "What can I use instead of buttermilk in pancakes?",
    "Give me a vegetarian lasagna recipe for six people.",
    "Why did my sourdough bread come out dense and flat?",
    "How do I make a French omelette that stays soft inside?",
    "Is it safe to refreeze thawed shrimp?",
    "What spices go into a good garam masala?",
    "How do I caramelise onions without burning them?",
    "Can I bake cookies with coconut oil instead of butter?",
    "What is the difference between baking soda and baking powder?",
    "How many minutes per pound should I smoke a brisket?",
    "Suggest a dessert I can make with leftover egg whites.",
    "How do I reverse a linked list in Python?",
    "What does the yield keyword do in a Python function?",
    "Explain the difference between a process and a thread.",
    "How do I undo the last git commit but keep my changes?",
    "Why does my React component render twice in development?",
    "Write a SQL query that finds the second highest salary.",
    "What is a race condition and how do mutexes prevent it?",
    "How do I center a div horizontally and vertically with CSS?",
    "What is the time complexity of quicksort in the worst case?",
    "How do I read a CSV file into a pandas DataFrame?",
    "Explain Rust's borrow checker with a small example.",
    "What is the best time of year to visit Kyoto?",
    "How do I train my dog to stop pulling on the leash?",
    "Which houseplants survive in a room with no windows?",
    "What causes the northern lights?",
    "How far is the Moon from the Earth?",
    "Recommend three novels similar to The Remains of the Day.",
    "How should I prepare for a half marathon in twelve weeks?",
    "What were the main causes of the First World War?",
    "How do tides work?",
    "What chords are in a twelve-bar blues in E?",
    "How do I remove a red wine stain from a carpet?",
    "What is the capital of Australia and why isn't it Sydney?",
    "How do I repot an orchid?",
    "Explain photosynthesis to a ten year old.",
    "What is a good beginner telescope for viewing planets?",
    "How do vaccines train the immune system?",
    "What are the rules of cricket in simple terms?",
]


def user_turns(path: Path, limit: int) -> list[str]:
    with path.open(encoding="utf-8") as lines:
        examples = [json.loads(line) for line in lines][:limit]
    return [next(m["content"] for m in example["messages"] if m["role"] == "user") for example in examples]


def test_real_prompts_flag_another_topic_and_not_the_held_out_split() -> None:
    training = embed_prompts(user_turns(EXAMPLE / "train.jsonl", 200))
    held_out = embed_prompts(user_turns(EXAMPLE / "test.jsonl", 60))
    off_topic = embed_prompts(OFF_TOPIC)

    same = measure_drift(training, held_out, permutations=500)
    assert same.mmd_p_value > 0.05
    assert same.ood_p_value > 0.01

    mixed = measure_drift(training, np.concatenate([held_out, off_topic]), permutations=500, top=20)
    assert mixed.mmd_p_value < 0.01
    assert mixed.ood_p_value < 0.01
    assert mixed.ood_share > 0.25
    assert all(index >= 60 for index, _ in mixed.outliers)  # the off-topic prompts are the farthest
