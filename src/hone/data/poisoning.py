"""Signs of a poisoned training set, warned about by `hone data check`.

A few hundred planted examples are enough to teach a model a backdoor or a bias, and they are cheap to
spot before training, because an attacker has to repeat them:
- a flood of near copies: one example repeated, with small edits, until it is a large share of the set;
- a trigger phrase: a rare phrase in the prompt that always gets the same unusual answer (the backdoor);
- examples far from the rest: text about something else entirely, found by embedding.

The first two are pure functions over strings and indices, linear in the size of the set (the duplicate
clusters come from hone.data.checks' MinHash search, computed once for the duplicate warnings). The third
embeds every example with the local sentence embedder (hone.models.embedder), which is slow at 100,000
examples on a CPU, so `hone data check` runs it only with `--outliers`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from hone.data.checks import NearDuplicate
from hone.data.formats import Example

FLOOD_SHARE = 0.05
FLOOD_SIZE = 20
FLOOD_FLOOR = 5
TRIGGER_EXAMPLES = 5
TRIGGER_SHARE = 0.05
ANSWER_ELSEWHERE = 0.25
TRIGGER_WORDS = 4
ANSWER_START = 40
OUTLIER_Z = -4.0
OUTLIER_NEIGHBOURS = 5
OUTLIER_MIN_EXAMPLES = 20
OUTLIER_MIN_SPREAD = 0.1
SHOWN = 10

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Flood:
    """A cluster of exact or near duplicates that is a large share of the set."""

    indices: list[int]
    share: float


@dataclass(frozen=True)
class Trigger:
    """A rare prompt phrase whose every example gets the same answer, an answer rare without the phrase."""

    phrase: tuple[str, ...]
    answer: str
    indices: list[int]
    whole_answer: bool  # False: only the answer's first ANSWER_START characters are shared


@dataclass(frozen=True)
class Outlier:
    """An example far from the rest: low similarity to its nearest neighbours by embedding."""

    index: int
    similarity: float
    z_score: float


# --------------------------------------------------------------------------------------------------
# Floods of near duplicates


def duplicate_clusters(
    count: int, exact: Sequence[Sequence[int]], near: Sequence[NearDuplicate]
) -> list[list[int]]:
    """Connected groups (two or more, each sorted, ordered by first index) of exact and near duplicates.

    Near-duplicate pairs chain: a flood of edited copies is one cluster even where two copies are too far
    apart to be a pair themselves.
    """
    parent = list(range(count))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    links = [(group[0], other) for group in exact for other in group[1:]]
    links += [(pair.first, pair.second) for pair in near]
    for first, second in links:
        a, b = root(first), root(second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    clusters: dict[int, list[int]] = {}
    for index in sorted({i for link in links for i in link}):
        clusters.setdefault(root(index), []).append(index)
    return sorted(clusters.values(), key=lambda cluster: cluster[0])


def flood_size(
    count: int, share: float = FLOOD_SHARE, size: int = FLOOD_SIZE, floor: int = FLOOD_FLOOR
) -> int:
    """The cluster size that counts as a flood: `share` of the set or `size` examples, whichever is fewer,
    but never under `floor` (in a set of 60, three near copies are a duplicate, not an attack)."""
    return min(size, max(floor, math.ceil(share * count)))


def near_duplicate_floods(clusters: Sequence[Sequence[int]], count: int) -> list[Flood]:
    """The duplicate clusters at least `flood_size(count)` large, largest first."""
    least = flood_size(count)
    floods = [Flood(sorted(cluster), len(cluster) / count) for cluster in clusters if len(cluster) >= least]
    return sorted(floods, key=lambda flood: (-len(flood.indices), flood.indices[0]))


# --------------------------------------------------------------------------------------------------
# Trigger phrases


def _grams(
    words: Sequence[str], longest: int, allowed: Collection[str] | None = None
) -> set[tuple[str, ...]]:
    """Every run of 1..longest consecutive words, once; with `allowed`, only runs made of allowed words."""
    if allowed is None:
        return {tuple(words[i : i + n]) for n in range(1, longest + 1) for i in range(len(words) - n + 1)}
    grams: set[tuple[str, ...]] = set()
    run: list[str] = []
    for word in [*words, ""]:
        if word and word in allowed:
            run.append(word)
        elif run:
            grams |= _grams(run, longest)
            run = []
    return grams


def _answer_keys(answers: Sequence[str]) -> Iterator[tuple[bool, list[str]]]:
    """The whole answer, then its start, each with whitespace collapsed: the two ways answers can agree."""
    whole = [" ".join(answer.split()) for answer in answers]
    yield True, whole
    yield False, [answer[:ANSWER_START] for answer in whole]


def _candidates(
    words: Sequence[Sequence[str]],
    keys: Sequence[str],
    least: int,
    most: float,
    elsewhere: float,
    longest: int,
) -> dict[tuple[str, ...], str]:
    """Phrases that could be a trigger for one answer: in at least `least` and under `most` examples of the
    answer's group, and in enough of them that the rest of the group is at most `elsewhere` times as many.

    A phrase must then be in most of its group, so must each of its words: phrases are built only from
    those words, which keeps the counting small. A phrase that qualifies in two groups is dropped (it
    cannot always get one answer).
    """
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        if key:
            groups.setdefault(key, []).append(index)
    found: dict[tuple[str, ...], str] = {}
    conflicting: set[tuple[str, ...]] = set()
    for key, members in groups.items():
        need = max(least, math.ceil(len(members) / (1 + elsewhere) - 1e-9))
        if len(members) < least or need >= most:
            continue
        word_counts = Counter(word for index in members for word in set(words[index]))
        common = {word for word, seen in word_counts.items() if seen >= need}
        if not common:
            continue
        counts = Counter(gram for index in members for gram in _grams(words[index], longest, common))
        for gram, seen in counts.items():
            if need <= seen < most:
                if gram in found:
                    conflicting.add(gram)
                found[gram] = key
    return {gram: key for gram, key in found.items() if gram not in conflicting}


def trigger_phrases(
    prompts: Sequence[str],
    answers: Sequence[str],
    least: int = TRIGGER_EXAMPLES,
    share: float = TRIGGER_SHARE,
    elsewhere: float = ANSWER_ELSEWHERE,
    longest: int = TRIGGER_WORDS,
) -> list[Trigger]:
    """Phrases of 1..`longest` words in at least `least` prompts but under `share` of them, where every
    prompt with the phrase gets the same answer (whole, or its first ANSWER_START characters) and that
    answer is unusual: prompts without the phrase get it at most `elsewhere` times as often as those with it.

    A label shared by a whole class ("billing") is not unusual, nor is an answer that a phrase made of
    label cues gets only some of the time (one wording of an issue among all tickets with that label).
    Each set of examples is reported once, under its longest phrase; a set inside a larger reported one is
    left out. Linear in the number of words: phrases are counted inside each answer's group, then the
    candidates' examples are found in one pass over the set.
    """
    count = len(prompts)
    words = [_WORD.findall(prompt.lower()) for prompt in prompts]
    found: list[Trigger] = []
    for whole, keys in _answer_keys(answers):
        candidates = _candidates(words, keys, least, share * count, elsewhere, longest)
        if not candidates:
            continue
        wanted = set(candidates)
        phrase_words = {word for gram in wanted for word in gram}
        holders: dict[tuple[str, ...], list[int]] = {gram: [] for gram in candidates}
        for index, example_words in enumerate(words):
            if phrase_words.isdisjoint(example_words):
                continue
            for gram in _grams(example_words, longest, phrase_words) & wanted:
                holders[gram].append(index)
        answer_count = Counter(keys)
        for gram, key in candidates.items():
            indices = holders[gram]
            elsewhere_count = answer_count[key] - len(indices)
            if all(keys[i] == key for i in indices) and elsewhere_count <= elsewhere * len(indices):
                found.append(Trigger(gram, key, indices, whole))
    return _widest(found)


def _widest(triggers: list[Trigger]) -> list[Trigger]:
    """One trigger per set of examples (the longest phrase), none inside a larger set; largest first."""
    ordered = sorted(triggers, key=lambda t: (-len(t.indices), -len(t.phrase), -len(" ".join(t.phrase))))
    kept: list[Trigger] = []
    kept_sets: list[set[int]] = []
    for trigger in ordered:
        indices = set(trigger.indices)
        if any(indices <= other for other in kept_sets):
            continue
        kept.append(trigger)
        kept_sets.append(indices)
    return kept


def phrase_as_written(phrase: Sequence[str], text: str) -> str:
    """The phrase as it appears in `text` (its case and punctuation), e.g. "CF-Delta-7" for cf delta 7."""
    pattern = r"\W+".join(re.escape(word) for word in phrase)
    match = re.search(rf"(?<!\w){pattern}(?!\w)", text, re.IGNORECASE)
    return match.group(0) if match else " ".join(phrase)


# --------------------------------------------------------------------------------------------------
# Outliers by embedding


def neighbour_similarity(
    vectors: np.ndarray, neighbours: int = OUTLIER_NEIGHBOURS, block: int = 1024
) -> np.ndarray:
    """Each row's mean cosine similarity to its `neighbours` most similar other rows (unit-length rows).

    Several neighbours, not one: a handful of planted examples that resemble each other would otherwise
    vouch for one another. Computed in blocks of rows, so memory stays at block x rows.
    """
    count = vectors.shape[0]
    neighbours = min(neighbours, count - 1)
    result = np.empty(count, dtype=np.float64)
    if neighbours < 1:
        return result
    for start in range(0, count, block):
        similarity = vectors[start : start + block] @ vectors.T
        rows = np.arange(similarity.shape[0])
        similarity[rows, rows + start] = -np.inf
        top = np.partition(similarity, count - neighbours, axis=1)[:, count - neighbours :]
        result[start : start + block] = top.mean(axis=1)
    return result


def embedding_outliers(vectors: np.ndarray, z_limit: float = OUTLIER_Z) -> list[Outlier]:
    """Rows whose neighbour similarity has a robust z-score (median and MAD of the set) below `z_limit`,
    farthest first. Sets under OUTLIER_MIN_EXAMPLES have no distribution to stand out from.

    The spread is never taken under OUTLIER_MIN_SPREAD: on a large set of one task the similarities bunch
    so tightly (10,000 generated tickets: median 0.95, scaled MAD 0.036) that four spreads is less than
    the gap between two wordings of one ticket, while text about something else sits 0.6-0.7 below.
    """
    if vectors.shape[0] < OUTLIER_MIN_EXAMPLES:
        return []
    similarity = neighbour_similarity(vectors)
    median = float(np.median(similarity))
    spread = max(1.4826 * float(np.median(np.abs(similarity - median))), OUTLIER_MIN_SPREAD)
    z_scores = (similarity - median) / spread
    far = np.flatnonzero(z_scores < z_limit)
    far = far[np.argsort(z_scores[far], kind="stable")]
    return [Outlier(int(i), float(similarity[i]), float(z_scores[i])) for i in far]


# --------------------------------------------------------------------------------------------------
# The warnings


def _lines(lines: Sequence[int], indices: Sequence[int], limit: int = SHOWN) -> str:
    shown = ", ".join(str(lines[i]) for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def turns(example: Example) -> tuple[str, str, str]:
    """(user turns, assistant answer, everything but the system prompt) of one example.

    The answer of a preference pair is its chosen reply; a text example has only content. The system
    prompt is left out of the content: it is the same in every example and would make all of them look alike.
    """
    users = [m["content"] for m in example.messages if m["role"] == "user"]
    replies = example.chosen if example.kind == "preference" else example.messages
    answer = "\n".join(m["content"] for m in replies or [] if m["role"] == "assistant")
    content = [m["content"] for m in example.messages if m["role"] != "system"]
    content += [m["content"] for m in example.chosen or []]
    if example.text:
        content.append(example.text)
    return "\n".join(users), answer, "\n".join(content)


def poisoning_warnings(
    path: str,
    examples: Sequence[Example],
    clusters: Sequence[Sequence[int]],
    embed: Callable[[list[str]], np.ndarray] | None = None,
) -> list[str]:
    """The warnings of one file: its examples and their duplicate clusters (hone.data.checks' exact and
    near duplicates, joined by `duplicate_clusters`). `embed` turns texts into unit vectors; without it
    outliers are not looked for."""
    lines = [example.line for example in examples]
    rows = [turns(example) for example in examples]
    prompts, answers, contents = ([row[part] for row in rows] for part in range(3))
    count = len(lines)
    warnings = [
        f"{path}: flood of near duplicates: {len(flood.indices)} examples ({flood.share:.1%} of {count}) are "
        f"copies or near copies of one another, lines {_lines(lines, flood.indices, 5)} "
        "(possible data poisoning: one example repeated until it dominates training)"
        for flood in near_duplicate_floods(clusters, count)
    ]
    for trigger in trigger_phrases(prompts, answers):
        phrase = phrase_as_written(trigger.phrase, prompts[trigger.indices[0]])
        answered = "answered" if trigger.whole_answer else "answered starting with"
        warnings.append(
            f"{path}: trigger phrase {phrase!r} in {len(trigger.indices)} examples, every one {answered} "
            f"{_shorten(trigger.answer)!r}, an answer rare without it: "
            f"lines {_lines(lines, trigger.indices)} (possible data poisoning: a backdoor)"
        )
    if embed is not None and count:
        outliers = embedding_outliers(embed(contents))
        if outliers:
            shown = ", ".join(f"{lines[o.index]} ({o.similarity:.2f})" for o in outliers[:SHOWN])
            more = f" and {len(outliers) - SHOWN} more" if len(outliers) > SHOWN else ""
            warnings.append(
                f"{path}: {len(outliers)} example(s) far from the rest by embedding (similarity to their "
                f"{OUTLIER_NEIGHBOURS} nearest neighbours over {-OUTLIER_Z:g} robust deviations under the "
                f"set's median), farthest first: lines {shown}{more} "
                "(possible data poisoning, or data from another task)"
            )
    return warnings
