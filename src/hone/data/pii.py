"""Personal data and secrets (PII) in training data: found by `hone data check`, redacted on request.

A fine-tuning run memorises what it is shown, so e-mail addresses, phone numbers, card numbers, IBANs and
API keys in the examples can come back out of the model; they are cheapest to catch before training, and
`hone data prepare --redact-pii` replaces each with a label such as [EMAIL]. Everything here is a pure
function over strings. It must stay fast for ~100,000 examples on a small machine, so regular expressions
do the scan, cheap hints skip the patterns a text cannot match, and checksums (Luhn for cards, mod-97 for
IBANs) keep lookalike numbers out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

PII_KINDS = ("email", "phone", "card", "api_key", "iban")
REDACTION_LABELS = {kind: f"[{kind.upper()}]" for kind in PII_KINDS}

# When two hits overlap and are equally long, the more specific kind wins (lower rank).
_KIND_RANK = {"api_key": 0, "iban": 1, "card": 2, "email": 3, "phone": 4}

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_API_KEY = re.compile(
    r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END[A-Z ]*PRIVATE KEY-----)?"
    r"|(?<![\w-])(?:"
    r"sk-[A-Za-z0-9_-]{20,}"
    r"|(?:sk|pk|rk)_live_[A-Za-z0-9]{16,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r")(?![\w-])"
)
_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d[\d ().-]{6,22}\d(?![\w])")
_PHONE_NATIONAL = re.compile(
    r"(?<![\w+#./:-])(?:\(\d{2,5}\)[ .-]?|\d{2,5}[ .-])\d{2,8}(?:[ .-]\d{2,8}){0,3}(?![\w]|[.:/-]\d)"
)
_CARD = re.compile(r"(?<![\w.+-])(?:\d[ -]?){12,18}\d(?![\w]|[.-]\d)")
# IBANs are written in capitals (ISO 13616), which keeps ordinary words out of the candidates.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_DATE = re.compile(
    r"(?:19|20)\d\d[-./ ](?:0?[1-9]|1[0-2])[-./ ](?:0?[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[-./ ](?:0?[1-9]|1[0-2])[-./ ](?:19|20)\d\d"
    r"|(?:0?[1-9]|1[0-2])[-./ ](?:0?[1-9]|[12]\d|3[01])[-./ ](?:19|20)\d\d"
)
_REPEATED_SEPARATOR = re.compile(r"[ .-]{2}")
# Cheap searches that rule a text out before the full patterns run (most texts hold no PII at all).
_API_KEY_HINT = re.compile(r"-----BEGIN|sk-|_live_|AKIA|gh[pousr]_|github_pat_|xox[abpr]-|AIza")
_DIGIT_RUN_HINT = re.compile(r"\d[\d ().-]{6,}\d")
_IBAN_HINT = re.compile(r"[A-Z]{2}\d\d")


@dataclass(frozen=True)
class PiiHit:
    """One piece of personal data or secret: its kind, and where it is (text[start:end] == value)."""

    kind: str
    start: int
    end: int
    value: str


def luhn_valid(digits: str) -> bool:
    """True when a string of digits passes the Luhn checksum that every payment card number carries.

    Checking it turns "any long number" into "a plausible card number": 9 in 10 random numbers fail.
    """
    if not digits or not digits.isdigit() or not digits.isascii():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """True when `text` (spaces allowed) is an IBAN whose ISO 13616 mod-97 check gives 1.

    The check digits make random letter-and-digit codes fail, so only real account numbers are flagged.
    """
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isascii() or not compact.isalnum():
        return False
    if not (compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _phone_digits_ok(candidate: str) -> bool:
    digit_count = sum(char.isdigit() for char in candidate)
    return 8 <= digit_count <= 15 and not _REPEATED_SEPARATOR.search(candidate)


def _national_phone_ok(candidate: str) -> bool:
    """Separated national numbers, but not dates, not short two-part codes like 1234-5678, and not the
    runs of 4-digit blocks in which card and account numbers are written."""
    if not _phone_digits_ok(candidate) or _DATE.search(candidate):
        return False
    groups = re.findall(r"\d+", candidate)
    if sum(len(group) == 4 for group in groups) >= 3:
        return False
    digit_count = sum(len(group) for group in groups)
    return len(groups) >= 3 or candidate.startswith("(") or digit_count >= 10


def _iban_hits(text: str) -> Iterator[PiiHit]:
    """IBAN candidates that pass the checksum.

    When a grouped candidate fails, the greedy match may have run into a following word ("... 32 ABCD"),
    so it is retried without its last group. An ungrouped one is never cut: a valid prefix ending
    inside a longer code is not an IBAN.
    """
    for match in _IBAN.finditer(text):
        value = match.group()
        while len(value.replace(" ", "")) >= 15:
            if iban_valid(value):
                yield PiiHit("iban", match.start(), match.start() + len(value), value)
                break
            if " " not in value:
                break
            value = value[: value.rfind(" ")]


def _raw_hits(text: str) -> Iterator[PiiHit]:
    """Every candidate of every kind, overlaps included; cheap hints skip the patterns that cannot match."""
    if "@" in text:
        for match in _EMAIL.finditer(text):
            yield PiiHit("email", match.start(), match.end(), match.group())
    if _API_KEY_HINT.search(text):
        for match in _API_KEY.finditer(text):
            value = match.group()
            if value.startswith("sk-") and not (re.search(r"\d", value) and re.search(r"[A-Za-z]", value)):
                continue  # "sk-" followed by words only ("sk-learn-style-...") is not a key
            yield PiiHit("api_key", match.start(), match.end(), value)
    if _IBAN_HINT.search(text):
        yield from _iban_hits(text)
    if not _DIGIT_RUN_HINT.search(text):
        return
    if "+" in text:
        for match in _PHONE_INTERNATIONAL.finditer(text):
            if _phone_digits_ok(match.group()):
                yield PiiHit("phone", match.start(), match.end(), match.group())
    for match in _PHONE_NATIONAL.finditer(text):
        if _national_phone_ok(match.group()):
            yield PiiHit("phone", match.start(), match.end(), match.group())
    for match in _CARD.finditer(text):
        digits = match.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield PiiHit("card", match.start(), match.end(), match.group())


def find_pii(text: str) -> list[PiiHit]:
    """Personal data and secrets in `text`, in order of position, none overlapping.

    Where candidates overlap (an IBAN's digit groups also look like a phone number), the longest wins,
    and between equally long ones the more specific kind.
    """
    candidates = sorted(_raw_hits(text), key=lambda hit: (hit.start - hit.end, _KIND_RANK[hit.kind]))
    kept: list[PiiHit] = []
    for hit in candidates:
        if all(hit.end <= other.start or hit.start >= other.end for other in kept):
            kept.append(hit)
    return sorted(kept, key=lambda hit: hit.start)


def redact_pii(text: str, hits: Sequence[PiiHit] | None = None) -> str:
    """`text` with each hit replaced by its label ([EMAIL], [PHONE], [CARD], [API_KEY], [IBAN]).

    Pass the hits from `find_pii` to avoid scanning twice; overlapping hits are skipped after the first.
    """
    if hits is None:
        hits = find_pii(text)
    pieces: list[str] = []
    cursor = 0
    for hit in sorted(hits, key=lambda hit: hit.start):
        if hit.start < cursor:
            continue
        pieces.append(text[cursor : hit.start])
        pieces.append(REDACTION_LABELS[hit.kind])
        cursor = hit.end
    pieces.append(text[cursor:])
    return "".join(pieces)
