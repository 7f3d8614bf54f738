from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hone.data.checks import (
    LengthStats,
    NearDuplicate,
    Overlap,
    cross_split_overlap,
    exact_duplicates,
    length_stats,
    near_duplicates,
    normalise,
    truncation_rate,
)

# 40 words; the near copy changes the second-to-last word, which touches 2 of the 36 word 5-grams:
# true Jaccard 34 / 38 = 0.89.
TICKET = (
    "My router stopped working after the firmware update last night and now every device in the house "
    "loses its connection after about ten minutes so I restarted it twice and reset the settings but "
    "nothing helped at all please advise soon"
)
TICKET_NEAR = TICKET.replace("advise soon", "respond soon")
UNRELATED = (
    "I would like to change the billing address on my subscription because we moved to a new office "
    "in the city centre last month and the old invoices still show the previous street name and postcode"
)
OTHER_UNRELATED = (
    "Can you tell me whether the premium plan includes priority phone support on weekends or only during "
    "normal business hours on weekdays since our team often works late shifts and needs quick answers"
)


# ----------------------------------------------------------------------------------------------------
# Duplicates and leakage


def test_normalise_lowercases_drops_punctuation_and_collapses_space() -> None:
    assert normalise("  Hello,\tWORLD!  It's   fine…\n") == "hello world its fine"
    assert normalise("Ça   VA? très_bien") == "ça va trèsbien"


def test_exact_duplicates_groups_case_space_and_punctuation_variants() -> None:
    texts = [
        "Reset my password, please.",
        "How do I export data?",
        "reset my   password please",
        "Something else entirely",
        "RESET MY PASSWORD PLEASE!!",
        "how do i export data",
        "",
        "...",
    ]
    assert exact_duplicates(texts) == [[0, 2, 4], [1, 5], [6, 7]]
    assert exact_duplicates(["a", "b", "c"]) == []


def test_near_duplicates_finds_a_one_word_change_and_not_unrelated_texts() -> None:
    texts = [TICKET, UNRELATED, TICKET_NEAR, OTHER_UNRELATED]
    pairs = near_duplicates(texts)
    assert [(pair.first, pair.second) for pair in pairs] == [(0, 2)]
    assert 0.7 <= pairs[0].similarity < 1.0


def test_near_duplicates_leave_out_exact_pairs_but_pair_every_copy() -> None:
    texts = [TICKET, TICKET_NEAR, TICKET.upper() + "!", UNRELATED, UNRELATED.lower()]
    pairs = near_duplicates(texts)
    similarity = pairs[0].similarity
    assert pairs == [NearDuplicate(0, 1, similarity), NearDuplicate(1, 2, similarity)]
    assert 0.7 <= similarity < 1.0


def test_near_duplicates_of_short_texts_compare_whole_texts() -> None:
    assert near_duplicates(["reset my password", "reset my password now", "hi"]) == []
    assert near_duplicates([]) == []


@pytest.mark.parametrize(
    ("threshold", "num_perm", "shingle"), [(0.0, 64, 5), (1.5, 64, 5), (0.8, 0, 5), (0.8, 64, 0)]
)
def test_similarity_settings_out_of_range_are_refused(threshold: float, num_perm: int, shingle: int) -> None:
    with pytest.raises(ValueError):
        near_duplicates([TICKET], threshold=threshold, num_perm=num_perm, shingle=shingle)
    with pytest.raises(ValueError):
        cross_split_overlap([TICKET], [TICKET], threshold=threshold, num_perm=num_perm, shingle=shingle)


def test_near_duplicates_are_deterministic() -> None:
    texts = [TICKET, TICKET_NEAR, UNRELATED, OTHER_UNRELATED, TICKET.replace("twice", "three times")]
    first_run = near_duplicates(texts, threshold=0.5)
    assert first_run == near_duplicates(list(texts), threshold=0.5)
    assert len(first_run) >= 2


def test_near_duplicates_do_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "from hone.data.checks import near_duplicates\n"
        f"print(near_duplicates([{TICKET!r}, {TICKET_NEAR!r}, {UNRELATED!r}], threshold=0.5))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert "NearDuplicate(first=0, second=1" in outputs.pop()


def test_cross_split_overlap_finds_exact_and_near_copies_only() -> None:
    train = [TICKET, UNRELATED, "Where is my parcel?"]
    other = [OTHER_UNRELATED, "where is my PARCEL", TICKET_NEAR]
    overlaps = cross_split_overlap(train, other)
    assert [(o.train_index, o.other_index, o.exact) for o in overlaps] == [(0, 2, False), (2, 1, True)]
    assert 0.7 <= overlaps[0].similarity < 1.0
    assert overlaps[1] == Overlap(2, 1, 1.0, True)


def test_cross_split_overlap_ignores_duplicates_within_one_split() -> None:
    assert cross_split_overlap([TICKET, TICKET_NEAR, TICKET], [UNRELATED]) == []
    assert cross_split_overlap([], [TICKET]) == []


# ----------------------------------------------------------------------------------------------------
# Lengths


def test_length_stats_odd_count() -> None:
    assert length_stats([5, 1, 3, 9, 7]) == LengthStats(
        count=5, min=1, median=5.0, p95=9, max=9, mean=5.0, total=25
    )


def test_length_stats_even_count_and_nearest_rank_p95() -> None:
    stats = length_stats(list(range(20, 0, -1)))
    # nearest rank: ceil(0.95 * 20) = 19th smallest of 1..20
    assert stats == LengthStats(count=20, min=1, median=10.5, p95=19, max=20, mean=10.5, total=210)


def test_length_stats_of_nothing_is_zero() -> None:
    assert length_stats([]) == LengthStats(count=0, min=0, median=0.0, p95=0, max=0, mean=0.0, total=0)


def test_truncation_rate_counts_only_lengths_over_the_limit() -> None:
    assert truncation_rate([100, 200, 250, 300, 400], 250) == pytest.approx(0.4)
    assert truncation_rate([250], 250) == 0.0
    assert truncation_rate([], 250) == 0.0
