"""python benchmarks/data_checks.py --examples 100000

Times the content checks of `hone data check` (hone.data.checks, hone.data.pii) on synthetic tickets:
  find_pii          - the PII scan over every example
  exact_duplicates  - groups of examples equal after normalisation
  near_duplicates   - MinHash + LSH pairs at or above the similarity threshold
Tickets are ~60 words, generated from a fixed seed; about 2% are exact copies of another ticket (case,
spacing and punctuation changed) and about 2% near copies (one of the last three words changed, or a short
sign-off added). Prints each time, what each check found, and the recall of the planted near copies.
"""

from __future__ import annotations

import argparse
import random
import string
import time
from collections.abc import Callable
from typing import TypeVar

from hone.data.checks import exact_duplicates, near_duplicates
from hone.data.pii import find_pii

OPENINGS = [
    "Hi team,",
    "Hello support,",
    "Good morning,",
    "Dear customer service,",
    "Hey there,",
    "To whom it may concern,",
]
PRODUCTS = ["router", "invoice portal", "mobile app", "subscription", "smart speaker", "laptop", "printer"]
PROBLEMS = [
    "stopped working after the last update",
    "keeps asking me to sign in again",
    "charged me twice this month",
    "shows an error when I try to save",
    "was delivered with a broken part",
    "is much slower than it used to be",
]
SIGN_OFFS = ["Thanks,", "Best regards,", "Cheers,", "Kind regards,", "Many thanks,"]
TEST_CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"]
TEST_IBANS = ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"]
NAMES = ["Alex", "Sam", "Priya", "Jonas", "Maria", "Chen", "Fatima", "Lucas", "Aiko", "Noah"]


def random_word(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))


def contact_detail(rng: random.Random) -> str:
    """Contact details in ~60% of tickets, a payment detail or a leaked key in a few."""
    choice = rng.randrange(20)
    if choice < 4:
        return f"You can reach me at {rng.choice(NAMES).lower()}{rng.randint(1, 999)}@example.com."
    if choice < 8:
        return f"My number is +44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}."
    if choice < 12:
        return f"The order number is INV-{rng.randint(10000, 99999)} from 2024-05-{rng.randint(10, 28)}."
    if choice == 12:
        return f"I paid with card {rng.choice(TEST_CARDS)} at {rng.randint(10, 23)}:{rng.randint(10, 59)}."
    if choice == 13:
        return f"Please refund to {rng.choice(TEST_IBANS)}."
    if choice == 14:
        key = "".join(rng.choices(string.ascii_uppercase + string.digits, k=16))
        return f"Our config has AKIA{key} in it."
    return ""


def make_ticket(rng: random.Random, vocabulary: list[str]) -> str:
    body = " ".join(rng.choices(vocabulary, k=rng.randint(36, 46)))
    parts = [
        rng.choice(OPENINGS),
        f"my {rng.choice(PRODUCTS)} {rng.choice(PROBLEMS)}.",
        body.capitalize() + ".",
        contact_detail(rng),
        rng.choice(SIGN_OFFS),
        rng.choice(NAMES),
    ]
    return " ".join(part for part in parts if part)


def exact_variant(text: str) -> str:
    return "  " + text.upper().replace(",", "").replace(".", " !") + " "


def near_variant(rng: random.Random, text: str, vocabulary: list[str]) -> str:
    words = text.split()
    if rng.random() < 0.5:
        words[-rng.randint(1, 3)] = rng.choice(vocabulary)
    else:
        words.append(rng.choice(["Thanks again.", "Urgent.", "PS: sorry for the long message."]))
    return " ".join(words)


def make_dataset(count: int, seed: int) -> tuple[list[str], set[tuple[int, int]]]:
    """Tickets plus the (original, copy) index pairs of the planted near copies."""
    rng = random.Random(seed)
    vocabulary = [random_word(rng) for _ in range(5000)]
    texts: list[str] = []
    planted: set[tuple[int, int]] = set()
    for index in range(count):
        roll = rng.random()
        if index > 0 and roll < 0.02:
            texts.append(exact_variant(texts[rng.randrange(index)]))
        elif index > 0 and roll < 0.04:
            original = rng.randrange(index)
            texts.append(near_variant(rng, texts[original], vocabulary))
            planted.add((original, index))
        else:
            texts.append(make_ticket(rng, vocabulary))
    return texts, planted


Result = TypeVar("Result")


def timed(label: str, function: Callable[..., Result], *args: object) -> Result:
    started = time.perf_counter()
    result = function(*args)
    print(f"{label:<18} {time.perf_counter() - started:7.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.85)
    args = parser.parse_args()

    texts, planted = make_dataset(args.examples, args.seed)
    words = sum(len(text.split()) for text in texts) / len(texts)
    print(f"{len(texts)} tickets, {words:.1f} words on average, {len(planted)} planted near copies")

    started = time.perf_counter()
    hits = timed("find_pii", lambda: [find_pii(text) for text in texts])
    groups = timed("exact_duplicates", exact_duplicates, texts)
    pairs = timed("near_duplicates", near_duplicates, texts, args.threshold)
    print(f"{'total':<18} {time.perf_counter() - started:7.2f} s")

    kinds: dict[str, int] = {}
    for found in hits:
        for hit in found:
            kinds[hit.kind] = kinds.get(hit.kind, 0) + 1
    print(f"PII hits: {sum(kinds.values())} {dict(sorted(kinds.items()))}")
    print(f"exact-duplicate groups: {len(groups)} covering {sum(len(group) for group in groups)} tickets")
    found_pairs = {(pair.first, pair.second) for pair in pairs}
    recovered = len(planted & found_pairs)
    print(f"near-duplicate pairs: {len(pairs)}; planted recovered {recovered}/{len(planted)}", end="")
    print(f" (recall {recovered / max(len(planted), 1):.3f})")


if __name__ == "__main__":
    main()
