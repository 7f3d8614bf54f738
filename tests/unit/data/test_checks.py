from __future__ import annotations

import os
import string
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hone.data.checks import (
    LengthStats,
    NearDuplicate,
    Overlap,
    PiiHit,
    cross_split_overlap,
    exact_duplicates,
    find_pii,
    iban_valid,
    length_stats,
    luhn_valid,
    near_duplicates,
    normalise,
    redact_pii,
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
# Checksums


@pytest.mark.parametrize("number", ["4111111111111111", "5500000000000004", "378282246310005"])
def test_luhn_accepts_known_test_card_numbers(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["4111111111111112", "5500000000000014", "378282246310006"])
def test_luhn_rejects_a_changed_digit(number: str) -> None:
    assert not luhn_valid(number)


@pytest.mark.parametrize("text", ["", "4111 1111 1111 1111", "41111111111a1111"])
def test_luhn_rejects_anything_but_digits(text: str) -> None:
    assert not luhn_valid(text)


@pytest.mark.parametrize(
    "iban", ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "gb82west12345698765432"]
)
def test_iban_accepts_valid_examples(iban: str) -> None:
    assert iban_valid(iban)


@pytest.mark.parametrize(
    "iban", ["GB83 WEST 1234 5698 7654 32", "DE88370400440532013000", "DE89370400440532013001", "DE89 3704"]
)
def test_iban_rejects_wrong_check_digits_and_short_codes(iban: str) -> None:
    assert not iban_valid(iban)


def reference_luhn(digits: str) -> bool:
    doubled = [int(d) * (2 if i % 2 else 1) for i, d in enumerate(reversed(digits))]
    return sum(d // 10 + d % 10 for d in doubled) % 10 == 0


@given(st.text(alphabet="0123456789", min_size=1, max_size=40))
def test_luhn_agrees_with_a_reference_implementation(digits: str) -> None:
    assert luhn_valid(digits) == reference_luhn(digits)


# ----------------------------------------------------------------------------------------------------
# PII


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("email", "jane.doe+tickets@example.co.uk"),
        ("phone", "+44 20 7946 0958"),
        ("phone", "+1 (555) 123-4567"),
        ("phone", "(555) 123-4567"),
        ("phone", "555-123-4567"),
        ("phone", "020 7946 0958"),
        ("card", "4111 1111 1111 1111"),
        ("card", "5500-0000-0000-0004"),
        ("card", "4111111111111111"),
        ("api_key", "sk-proj-abc123DEF456ghi789JKL0"),
        ("api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("api_key", "AKIAIOSFODNN7EXAMPLE"),
        ("api_key", "ghp_" + "aB3" * 12),
        ("api_key", "github_pat_11ABCDEFG0123456789_abcdefghij"),
        ("api_key", "xoxb-123456789012-abcdefABCDEF"),
        ("api_key", "AIza" + "SyD-9tSrke72PouQMnMX_7b1R2wxYz01234"),
        ("iban", "GB82 WEST 1234 5698 7654 32"),
        ("iban", "DE89370400440532013000"),
    ],
)
def test_each_kind_is_found_with_its_span(kind: str, value: str) -> None:
    text = f"Hello, please use {value} for this, thanks."
    start = text.index(value)
    assert find_pii(text) == [PiiHit(kind, start, start + len(value), value)]


def test_private_key_block_is_one_hit() -> None:
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nq3ZkTQ==\n-----END RSA PRIVATE KEY-----"
    text = f"config:\n{block}\nend"
    assert find_pii(text) == [PiiHit("api_key", 8, 8 + len(block), block)]


@pytest.mark.parametrize(
    "text",
    [
        "Invoice INV-48213 is attached.",
        "It happened on 2024-05-17 at 10:30:45.",
        "The date was 17/05/2024, order 1234-5678.",
        "Upgrade from version 1.2.3 to 10.4.12.",
        "Ship it to zip code 90210.",
        "Card 4111 1111 1111 1112 was declined.",
        "Account GB83 WEST 1234 5698 7654 32X is closed.",
        "Reference DE89370400440532013000ABCDEFG4 is not an account.",
        "The task-management-system-overview doc is ready.",
        "We use an sk-learn-style-configuration-file here.",
        "Email me at jane at example dot com.",
    ],
)
def test_lookalikes_are_not_pii(text: str) -> None:
    assert find_pii(text) == []


def test_overlapping_candidates_keep_the_longest() -> None:
    # The IBAN's digit groups "1234 5698 7654 32" also look like a phone number.
    text = "IBAN: GB82 WEST 1234 5698 7654 32."
    assert [hit.kind for hit in find_pii(text)] == ["iban"]


def test_redaction_replaces_every_hit() -> None:
    text = (
        "Mail jane@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111, "
        "key AKIAIOSFODNN7EXAMPLE, IBAN DE89370400440532013000. Order INV-48213."
    )
    assert redact_pii(text) == (
        "Mail [EMAIL] or call [PHONE]; card [CARD], key [API_KEY], IBAN [IBAN]. Order INV-48213."
    )


def test_redaction_uses_the_hits_it_is_given() -> None:
    text = "Mail jane@example.com now"
    assert redact_pii(text, hits=[PiiHit("phone", 5, 21, "jane@example.com")]) == "Mail [PHONE] now"
    assert redact_pii(text, hits=[]) == text


emails = st.builds(
    "{}@{}.{}".format,
    st.text(alphabet=string.ascii_lowercase + string.digits + "._+", min_size=1, max_size=12),
    st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10),
    st.sampled_from(["com", "org", "io", "co.uk"]),
)
filler = st.text(alphabet=string.ascii_letters + string.digits + " ,.!?-", max_size=30)


@given(st.lists(st.tuples(filler, emails), min_size=1, max_size=4), filler)
def test_redaction_never_leaves_a_found_email(pieces: list[tuple[str, str]], tail: str) -> None:
    text = " ".join(f"{words} {email}" for words, email in pieces) + " " + tail
    found = [hit.value for hit in find_pii(text) if hit.kind == "email"]
    redacted = redact_pii(text)
    assert found
    assert "@" not in redacted
    assert not any(email in redacted for email in found)


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
