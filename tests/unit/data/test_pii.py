"""Personal data and secrets in training data: the checksums, what is found and where, and redaction."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hone.data.pii import PiiHit, find_pii, iban_valid, luhn_valid, redact_pii

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
