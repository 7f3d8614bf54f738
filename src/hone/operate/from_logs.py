"""`hone data from-logs`: what production was told it got wrong becomes a new dataset version.

From the chat requests answered (status 200) in a window of the request log, and the feedback on them:

- a request with a correction gives an SFT example (the logged messages, then the correction as the
  assistant's turn) and a preference pair (chosen: the correction, rejected: the logged answer) unless the
  two are the same text;
- with `min_rating`, a request whose mean score is at least that and that has no correction gives an SFT
  example with the logged answer (only when `include_rated`); answers rated below it without a correction
  are only counted, since nothing says what the right answer was.

The logged messages are what the model saw: the server logs the chat after putting the version's trained
system prompt in front of a request that carried none (hone.serve.app.complete), so each example keeps
the system prompt it was answered under.

The examples are redacted again (a log written with `serve.redact_pii: false` holds PII), de-duplicated
among themselves and against the train split, and any whose user text is in the frozen test split, exactly
or nearly (the `hone data check` leakage test), is left out. The version folder is named by its content
hash, like `hone data prepare`'s:

    <out>/<hash[:16]>/
      train.jsonl         SFT examples (hone's canonical JSONL); absent when every one was dropped
      validation.jsonl    a seeded tenth of them, only from VALIDATION_FROM examples on
      preferences.jsonl   the preference pairs (prompt, chosen, rejected), when there are any
      card.json           the window, the versions, the counts, and each example's response and feedback ids
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console

from hone.config import ServeFile
from hone.data import checks
from hone.data.check import example_text
from hone.data.formats import Example, normalise
from hone.data.load import load_split
from hone.data.prepare import check_out_folder, redact_example, write_dataset_version
from hone.data.sources import RawRecord
from hone.data.version import dataset_hash
from hone.errors import HoneError, listed, located
from hone.operate.feedback import request_log
from hone.operate.report import window_seconds

VALIDATION_FROM = 50  # SFT examples before a tenth is held out; fewer leave every correction to training
VALIDATION_FRACTION = 0.1
SEED = 42
SHOWN_PROBLEMS = 20
COUNTED = (
    "requests",  # chat requests answered in the window (by --version, when given)
    "ratings",  # feedback rows on them
    "rated_requests",
    "corrections",
    "corrections_equal_to_answer",  # an SFT example but no preference pair
    "corrections_of_empty_answers",  # likewise: no rejected reply
    "rated_without_correction",
    "rated_included",
    "rated_below_min_rating",
    "unusable",  # would not load as a chat (see the card's `unusable`)
    "pii_redacted",
    "duplicates_dropped",  # among the examples themselves
    "train_duplicates_dropped",
    "test_leakage_exact",
    "test_leakage_near",
)


@dataclass
class Provenance:
    """Where an example came from: the responses (several once duplicates are merged) and their feedback."""

    origin: str  # "correction" or "rating"
    response_ids: list[str]
    feedback_ids: list[str]
    versions: list[str]

    def copy(self) -> Provenance:
        return Provenance(self.origin, [*self.response_ids], [*self.feedback_ids], [*self.versions])

    def merge(self, other: Provenance) -> None:
        for mine, theirs in (
            (self.response_ids, other.response_ids),
            (self.feedback_ids, other.feedback_ids),
            (self.versions, other.versions),
        ):
            mine.extend(value for value in theirs if value not in mine)


@dataclass
class Sourced:
    example: Example
    provenance: Provenance


@dataclass
class FromLogs:
    """The written version: its folder, its examples (in file order) and its card."""

    folder: Path
    version: str  # the content hash
    train: list[Example]
    validation: list[Example]
    preferences: list[Example]
    card: dict[str, Any] = field(repr=False)


def dataset_from_logs(
    settings: ServeFile,
    out: Path,
    since: str | None = None,
    min_rating: float | None = None,
    include_rated: bool = False,
    train: Path | None = None,
    test: Path | None = None,
    version: str | None = None,
    now: float | None = None,
) -> FromLogs:
    """Write the dataset version the request log's feedback teaches (atomically; reused when the same
    content exists) and return it. A HoneError says why when nothing usable is found."""
    if min_rating is not None and not 0.0 <= min_rating <= 1.0:
        raise HoneError(f"--min-rating {min_rating}: expected a score from 0 to 1 (thumbs up is 1)")
    if include_rated and min_rating is None:
        raise HoneError("rated answers are included only above a bar: pass --min-rating")
    check_out_folder(out)
    window = since or settings.monitor.since
    ended = time.time() if now is None else now
    began = ended - window_seconds(window)
    requests, ratings, where = read_log(settings, began, version)
    counts: Counter[str] = Counter(requests=len(requests))
    problems: list[str] = []
    sft, pairs = harvest(requests, ratings, min_rating, include_rated, counts, problems)
    counts["unusable"] = len(problems)
    sft, pairs = cleaned([sft, pairs], counts, train, test)
    if not sft and not pairs:
        raise HoneError(nothing_usable(counts, window, version, where, min_rating, include_rated))
    kept, held = validation_split(sft)
    files = {"train": kept, "validation": held, "preferences": pairs}
    files = {name: members for name, members in files.items() if members}
    content = dataset_hash({name: [item.example for item in members] for name, members in files.items()})
    context = {
        "request_log": where,
        "since": window,
        "from": began,
        "to": ended,
        "version": version,
        "min_rating": min_rating,
        "include_rated": include_rated,
        "train": str(train) if train is not None else None,
        "test": str(test) if test is not None else None,
    }
    card = dataset_card(content, files, requests, counts, problems, context)
    examples = {name: [item.example for item in members] for name, members in files.items()}
    folder = write_dataset_version(out, content, examples, card)
    return FromLogs(
        folder,
        content,
        examples.get("train", []),
        examples.get("validation", []),
        examples.get("preferences", []),
        json.loads((folder / "card.json").read_text(encoding="utf-8")),
    )


def read_log(
    settings: ServeFile, began: float, version: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """(the answered chat requests, their feedback, the log's URL without a password)."""
    log = request_log(settings)
    try:
        rows = log.rows(since=began)
        requests = answered_chats(rows, version)
        answered = {row["id"] for row in requests}
        ratings = [row for row in log.feedback(since=began) if row["response_id"] in answered]
        where = sa.make_url(log.url).render_as_string(hide_password=True)
    finally:
        log.close()
    if version is not None and not requests and rows:
        seen = sorted({row["version"] for row in rows if row["version"]})
        raise HoneError(
            f"--version {version}: answered no chat request in the window; these did: {listed(seen)} "
            "(a registered version as NAME/N, not an alias)"
        )
    return requests, ratings, where


def answered_chats(rows: list[dict[str, Any]], version: str | None) -> list[dict[str, Any]]:
    """Chat requests that were answered, oldest first (the id breaks ties, so the order is stable)."""
    chats = [
        row
        for row in rows
        if row["endpoint"] == "chat" and row["status"] == 200 and version in (None, row["version"])
    ]
    return sorted(chats, key=lambda row: (row["created"], row["id"]))


def harvest(
    requests: list[dict[str, Any]],
    ratings: list[dict[str, Any]],
    min_rating: float | None,
    include_rated: bool,
    counts: Counter[str],
    problems: list[str],
) -> tuple[list[Sourced], list[Sourced]]:
    """(SFT examples, preference pairs) from each rated request, in the order the requests came."""
    by_response: dict[str, list[dict[str, Any]]] = {}
    for rating in sorted(ratings, key=lambda row: (row["created"], row["id"])):
        by_response.setdefault(rating["response_id"], []).append(rating)
    counts["ratings"] = len(ratings)
    sft: list[Sourced] = []
    pairs: list[Sourced] = []
    for request in requests:
        rows = by_response.get(request["id"])
        if not rows:
            continue
        counts["rated_requests"] += 1
        corrections = [row["correction"] for row in rows if (row["correction"] or "").strip()]
        answer = request["response"] or ""
        provenance = Provenance(
            "correction" if corrections else "rating",
            [request["id"]],
            [row["id"] for row in rows],
            [request["version"] or "-"],
        )
        if corrections:
            counts["corrections"] += 1
            correction = corrections[-1]  # the latest word on what the answer should have been
            example = chat_example(request, correction, problems)
            if example is None:
                continue
            sft.append(Sourced(example, provenance))
            if correction.strip() == answer.strip():
                counts["corrections_equal_to_answer"] += 1
            elif not answer.strip():
                counts["corrections_of_empty_answers"] += 1  # no rejected reply to pair with
            elif (pair := preference_pair(request, correction, answer, problems)) is not None:
                pairs.append(Sourced(pair, provenance.copy()))
            continue
        counts["rated_without_correction"] += 1
        score = sum(row["score"] for row in rows) / len(rows)
        if min_rating is None:
            continue
        if score < min_rating:
            counts["rated_below_min_rating"] += 1
        elif include_rated and (example := chat_example(request, answer, problems)) is not None:
            counts["rated_included"] += 1
            sft.append(Sourced(example, provenance))
    return sft, pairs


def logged_messages(request: dict[str, Any]) -> Any:
    try:
        return json.loads(request["request"])
    except (ValueError, RecursionError):
        return None


def checked(request: dict[str, Any], data: dict[str, Any], fmt: str, problems: list[str]) -> Example | None:
    """The record as hone's loader reads it, or None (and the problem noted) when it would not load: a
    logged chat may end on the assistant's turn, or have two turns of one role in a row."""
    record = RawRecord(data, request["id"], 1)
    try:
        return normalise(record, fmt)
    except HoneError as exc:
        problem = str(exc).removeprefix(located(record.source, "", record.line))
        problems.append(f"{request['id']}: {problem}")
        return None


def chat_example(request: dict[str, Any], answer: str, problems: list[str]) -> Example | None:
    messages = logged_messages(request)
    if not isinstance(messages, list):
        problems.append(f"{request['id']}: the logged request is not a list of chat messages")
        return None
    data = {"messages": [*messages, {"role": "assistant", "content": answer}]}
    return checked(request, data, "messages", problems)


def preference_pair(
    request: dict[str, Any], chosen: str, rejected: str, problems: list[str]
) -> Example | None:
    data = {
        "prompt": logged_messages(request),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }
    return checked(request, data, "preference", problems)


def cleaned(
    kinds: list[list[Sourced]], counts: Counter[str], train: Path | None, test: Path | None
) -> list[list[Sourced]]:
    """Each list redacted, de-duplicated, without what the train split holds or the test split asks."""
    kinds = [merged_duplicates(redacted(items, counts), counts) for items in kinds]
    if train is not None:
        known = {checks.normalise(conversation_text(e)) for e in load_split(train)}
        kinds = [not_in_train(items, known, counts) for items in kinds]
    if test is not None:
        frozen = [user_text(e) for e in load_split(test)]
        kinds = [not_in_test(items, frozen, counts) for items in kinds]
    return kinds


def redacted(items: list[Sourced], counts: Counter[str]) -> list[Sourced]:
    cleaned = []
    for item in items:
        example, found = redact_example(item.example)
        counts["pii_redacted"] += found
        cleaned.append(Sourced(example, item.provenance))
    return cleaned


def conversation_text(example: Example) -> str:
    """The example without its system prompt: a correction the train split already holds is a duplicate
    whether or not the split's file carries the system prompt (`data.system_prompt` adds it on loading)."""
    turns = [message for message in example.messages if message["role"] != "system"]
    return example_text(replace(example, messages=turns))


def user_text(example: Example) -> str:
    return "\n".join(message["content"] for message in example.messages if message["role"] == "user")


def merged_duplicates(items: list[Sourced], counts: Counter[str]) -> list[Sourced]:
    """The first of each group of exact duplicates (prepare's normalised form), credited with the
    responses and feedback of the others."""
    groups = checks.exact_duplicates([conversation_text(item.example) for item in items])
    dropped = set()
    for group in groups:
        for index in group[1:]:
            items[group[0]].provenance.merge(items[index].provenance)
            dropped.add(index)
    counts["duplicates_dropped"] += len(dropped)
    return [item for index, item in enumerate(items) if index not in dropped]


def not_in_train(items: list[Sourced], known: set[str], counts: Counter[str]) -> list[Sourced]:
    kept = [item for item in items if checks.normalise(conversation_text(item.example)) not in known]
    counts["train_duplicates_dropped"] += len(items) - len(kept)
    return kept


def not_in_test(items: list[Sourced], frozen: list[str], counts: Counter[str]) -> list[Sourced]:
    """Leave out every example whose user text is in the test split, exactly or nearly, as `hone data
    check` finds leakage: the test split stays a measure of what the model was never shown."""
    overlaps = checks.cross_split_overlap(frozen, [user_text(item.example) for item in items])
    exact = {overlap.other_index for overlap in overlaps if overlap.exact}
    near = {overlap.other_index for overlap in overlaps} - exact
    counts["test_leakage_exact"] += len(exact)
    counts["test_leakage_near"] += len(near)
    return [item for index, item in enumerate(items) if index not in exact | near]


def validation_split(items: list[Sourced]) -> tuple[list[Sourced], list[Sourced]]:
    """(train, validation): a seeded tenth held out once there are VALIDATION_FROM examples. Below that a
    held-out split would be too small to say anything and would take scarce corrections from training; the
    production version's validation split serves instead."""
    if len(items) < VALIDATION_FROM:
        return items, []
    order = list(range(len(items)))
    random.Random(SEED).shuffle(order)
    held = set(order[: round(len(items) * VALIDATION_FRACTION)])
    return (
        [item for index, item in enumerate(items) if index not in held],
        [item for index, item in enumerate(items) if index in held],
    )


def nothing_usable(
    counts: Counter[str],
    window: str,
    version: str | None,
    where: str,
    min_rating: float | None,
    include_rated: bool,
) -> str:
    answered = f" answered by {version}" if version else ""
    if not counts["requests"]:
        return f"no chat requests{answered} in the last {window} in {where}; nothing to learn from"
    head = f"{counts['requests']} chat requests{answered} in the last {window}"
    if not counts["ratings"]:
        return f"{head}, none with feedback (POST /v1/feedback); nothing to learn from"
    if not counts["corrections"] and not counts["rated_included"]:
        rated = f"{head}, {counts['ratings']} ratings, none with a correction"
        if min_rating is None or not include_rated:
            return f"{rated}; --min-rating also takes well-rated answers"
        return f"{rated} and none rated {min_rating:g} or better"
    dropped = {
        "duplicates of the train split": counts["train_duplicates_dropped"],
        "in the test split": counts["test_leakage_exact"] + counts["test_leakage_near"],
        "not a chat hone can train on": counts["unusable"],
    }
    reasons = listed(f"{number} {why}" for why, number in dropped.items() if number)
    return f"{head}: every example from the feedback was left out ({reasons})"


def dataset_card(
    content: str,
    files: dict[str, list[Sourced]],
    requests: list[dict[str, Any]],
    counts: Counter[str],
    problems: list[str],
    context: dict[str, Any],
) -> dict[str, Any]:
    splits = {name: members for name, members in files.items() if name != "preferences"}
    pairs = files.get("preferences", [])
    return {
        "version": content,
        "made_by": "hone data from-logs",
        "source": context,
        "versions": dict(sorted(Counter(row["version"] or "-" for row in requests).items())),
        "splits": {
            name: {"examples": len(members), "kinds": dict(Counter(i.example.kind for i in members))}
            for name, members in splits.items()
        },
        "validation": (
            f"a seeded {VALIDATION_FRACTION:.0%} of the SFT examples"
            if "validation" in splits
            else f"none: fewer than {VALIDATION_FROM} SFT examples"
        ),
        "test": "none: evaluate on the frozen test split, which these examples were kept out of",
        "preferences": {"file": "preferences.jsonl", "pairs": len(pairs)} if pairs else None,
        "counts": {name: counts[name] for name in COUNTED},
        "unusable": problems[:SHOWN_PROBLEMS],
        "provenance": {
            name: [asdict(item.provenance) for item in members] for name, members in files.items()
        },
    }


def print_from_logs(result: FromLogs, console: Console) -> None:
    counts, source = result.card["counts"], result.card["source"]
    sizes = ", ".join(f"{name} {len(examples)}" for name, examples in (
        ("train", result.train), ("validation", result.validation), ("preference pairs", result.preferences)
    ) if examples)  # fmt: skip
    console.print(f"[green]dataset version[/] {result.version[:16]}: {sizes} -> {result.folder}")
    rated = (
        f", {counts['rated_included']} well-rated answers taken, {counts['rated_below_min_rating']} "
        f"rated below {source['min_rating']:g} without a correction"
        if source["min_rating"] is not None
        else ""
    )
    console.print(
        f"  from {counts['requests']} chat requests in the last {source['since']}: "
        f"{counts['ratings']} ratings, {counts['corrections']} corrections{rated}"
    )
    console.print(
        f"  left out: {counts['duplicates_dropped']} duplicates, "
        f"{counts['train_duplicates_dropped']} already in the train split, "
        f"{counts['test_leakage_exact'] + counts['test_leakage_near']} in the test split, "
        f"{counts['unusable']} unusable; {counts['pii_redacted']} PII redactions"
    )
    if source["test"] is None:
        console.print("  [yellow]not checked against a test split[/] (--test): leakage is possible")
    if result.train:
        console.print(f"next: hone data check {result.folder / 'train.jsonl'}")
    if result.preferences:
        console.print(f"next: hone data check {result.folder / 'preferences.jsonl'} train.method=dpo")
