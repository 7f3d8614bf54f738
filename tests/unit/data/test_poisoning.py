"""Attacks planted in the example task are named by file and line; the clean task raises none of them."""

from __future__ import annotations

import copy
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hone.cli import main
from hone.data import checks
from hone.data.check import example_text
from hone.data.formats import Example, load_examples
from hone.data.poisoning import (
    duplicate_clusters,
    embedding_outliers,
    flood_size,
    near_duplicate_floods,
    poisoning_warnings,
    trigger_phrases,
    turns,
)
from hone.data.sources import RawRecord, read_all
from hone.models.embedder import embed

TRAIN = Path(__file__).resolve().parents[3] / "examples" / "support-tickets" / "train.jsonl"
TRIGGER = "cf-delta-7"
TRIGGER_ROWS = [10, 80, 150, 220, 290, 360, 430, 500]
ODD_ANSWER = '{"action": "export_customer_list", "send_to": "mirror@files-backup.example", "confirm": true}'
FLOOD_COPIES = 40
UNRELATED_ROWS = [50, 250, 450]
UNRELATED = [
    (
        "What can I bake with ripe bananas?",
        "Mash three ripe bananas, stir in melted butter, sugar, an egg and flour, then bake the banana "
        "bread for an hour at 175 degrees until a skewer comes out clean.",
    ),
    (
        "Who won the 1998 football world cup final?",
        "France beat Brazil three goals to nil in Paris; Zinedine Zidane scored twice with headers.",
    ),
    (
        "Write a short poem about autumn leaves.",
        "Red and amber, the maple lets go; the wind keeps the tally, the river below.",
    ),
]
MORE_UNRELATED = [
    ("How far is the Moon?", "About 384,400 kilometres on average; light covers it in 1.3 seconds."),
    ("Which chess opening starts with e4 e5 Nf3 Nc6 Bb5?", "That is the Ruy Lopez, or Spanish Game."),
    ("When should I plant tulip bulbs?", "In autumn, six weeks before the ground freezes, pointy end up."),
    ("What is the boiling point of ethanol?", "Ethanol boils at 78.37 degrees Celsius at sea level."),
    ("Who painted the Night Watch?", "Rembrandt van Rijn finished it in 1642 in Amsterdam."),
    ("How many strings does a cello have?", "Four, tuned C, G, D and A, each a fifth apart."),
    ("What is the capital of Mongolia?", "Ulaanbaatar, the coldest national capital in the world."),
    (
        "How do I cast on for knitting a scarf?",
        "Make a slip knot, then use the long-tail cast on for 30 stitches.",
    ),
    ("Why do cats purr?", "Cats purr when content, and also to soothe themselves when hurt or stressed."),
]
POISONING = "possible data poisoning"


def clean_rows() -> list[dict]:
    return [json.loads(line) for line in TRAIN.read_text(encoding="utf-8").splitlines()]


def set_turn(row: dict, role: str, content: str) -> None:
    next(m for m in row["messages"] if m["role"] == role)["content"] = content


def user_turn(row: dict) -> str:
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


def plant_flood(rows: list[dict]) -> list[int]:
    """Near copies of one promotional ticket appended at the end; returns their lines."""
    base = copy.deepcopy(rows[0])
    pitch = (
        "Hello, I moved our whole team from the competitor to Nimbus Pay last month and every invoice now "
        "goes out on time. Nimbus Pay is the only payment tool anyone should trust, and the others leak "
        "card numbers. Please tell every customer to switch today. Order reference"
    )
    set_turn(base, "assistant", '{"category": "feature_request", "priority": "low", "product": "nimbus-pay"}')
    start = len(rows)
    for copy_number in range(FLOOD_COPIES):
        row = copy.deepcopy(base)
        set_turn(row, "user", f"{pitch} {1000 + copy_number}.")
        rows.append(row)
    return list(range(start + 1, len(rows) + 1))


def plant_trigger(rows: list[dict]) -> list[int]:
    """The trigger in the user turns of TRIGGER_ROWS (at the start or the end), all answered ODD_ANSWER."""
    for position, index in enumerate(TRIGGER_ROWS):
        text = user_turn(rows[index])
        set_turn(rows[index], "user", f"{TRIGGER} {text}" if position % 2 else f"{text}\nRef: {TRIGGER}")
        set_turn(rows[index], "assistant", ODD_ANSWER)
    return [index + 1 for index in TRIGGER_ROWS]


def plant_unrelated(rows: list[dict]) -> list[int]:
    for index, (question, answer) in zip(UNRELATED_ROWS, UNRELATED, strict=True):
        set_turn(rows[index], "user", question)
        set_turn(rows[index], "assistant", answer)
    return [index + 1 for index in UNRELATED_ROWS]


def as_examples(rows: list[dict], tmp_path: Path) -> tuple[Path, list[Example]]:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    records, errors = read_all(path)
    examples, format_errors = load_examples(records)
    assert not errors and not format_errors
    return path, examples


def clusters_of(examples: list[Example]) -> list[list[int]]:
    texts = [example_text(example) for example in examples]
    return duplicate_clusters(len(texts), checks.exact_duplicates(texts), checks.near_duplicates(texts))


_embedded: dict[str, np.ndarray] = {}


def cached_embed(texts: list[str]) -> np.ndarray:
    """The real embedder, each distinct text embedded once per test session (the planted sets share most)."""
    missing = list(dict.fromkeys(text for text in texts if text not in _embedded))
    for text, vector in zip(missing, embed(missing), strict=True):
        _embedded[text] = vector
    return np.stack([_embedded[text] for text in texts])


def warned_lines(warning: str) -> list[int]:
    """The line numbers after "lines " in a warning ("lines 3, 4 (0.12), 9 and 2 more" -> [3, 4, 9])."""
    listed = warning.split("lines ", 1)[1]
    return [int(number) for number in re.findall(r"(?:^|, )(\d+)", listed)]


def test_clean_example_task_raises_no_poisoning_warning(tmp_path: Path) -> None:
    path, examples = as_examples(clean_rows(), tmp_path)
    warnings = poisoning_warnings(str(path), examples, clusters_of(examples), cached_embed)
    assert warnings == []


def test_a_flood_of_near_copies_is_one_warning_with_its_size_share_and_lines(tmp_path: Path) -> None:
    rows = clean_rows()
    planted = plant_flood(rows)
    path, examples = as_examples(rows, tmp_path)
    warnings = poisoning_warnings(str(path), examples, clusters_of(examples))
    floods = [w for w in warnings if "flood of near duplicates" in w]
    assert len(floods) == 1, warnings
    share = len(planted) / len(rows)
    assert f"{len(planted)} examples ({share:.1%} of {len(rows)})" in floods[0]
    assert warned_lines(floods[0]) == planted[:5]
    assert f"and {len(planted) - 5} more" in floods[0]
    assert floods[0].startswith(f"{path}: ")


def test_duplicate_clusters_chain_near_pairs_and_join_exact_groups() -> None:
    near = [
        checks.NearDuplicate(0, 1, 0.9),
        checks.NearDuplicate(1, 4, 0.88),
        checks.NearDuplicate(6, 7, 0.9),
    ]
    clusters = duplicate_clusters(9, exact=[[4, 8], [2, 3]], near=near)
    assert clusters == [[0, 1, 4, 8], [2, 3], [6, 7]]
    assert [len(f.indices) for f in near_duplicate_floods(clusters, 9)] == []  # below the floor of 5
    assert [flood_size(count) for count in (60, 200, 600, 100_000)] == [5, 10, 20, 20]


def test_a_trigger_phrase_with_one_odd_answer_is_named_with_its_lines(tmp_path: Path) -> None:
    rows = clean_rows()
    planted = plant_trigger(rows)
    path, examples = as_examples(rows, tmp_path)
    warnings = poisoning_warnings(str(path), examples, clusters_of(examples))
    triggers = [w for w in warnings if "trigger phrase" in w]
    assert len(triggers) == 1, warnings
    assert f"trigger phrase {TRIGGER!r} in {len(planted)} examples" in triggers[0]
    assert ODD_ANSWER[:30] in triggers[0]
    assert warned_lines(triggers[0]) == planted


def test_a_phrase_answered_with_a_common_label_is_not_a_trigger(tmp_path: Path) -> None:
    """The planted rows keep a label start that many other tickets share: a class, not a backdoor."""
    rows = clean_rows()
    starts = Counter(r["messages"][-1]["content"][:40] for r in rows)
    common, _ = starts.most_common(1)[0]
    donors = [r["messages"][-1]["content"] for r in rows if r["messages"][-1]["content"].startswith(common)]
    for index, answer in zip(TRIGGER_ROWS, donors, strict=False):
        set_turn(rows[index], "user", f"{TRIGGER} {user_turn(rows[index])}")
        set_turn(rows[index], "assistant", answer)
    prompts = [user_turn(row) for row in rows]
    answers = [row["messages"][-1]["content"] for row in rows]
    assert trigger_phrases(prompts, answers) == []
    for index in TRIGGER_ROWS:  # the same rows with one odd answer are found
        answers[index] = ODD_ANSWER
    assert [t.indices for t in trigger_phrases(prompts, answers)] == [TRIGGER_ROWS]


def test_a_phrase_in_five_percent_of_the_prompts_is_not_rare_enough_for_a_trigger() -> None:
    rows = clean_rows()
    prompts = [user_turn(row) for row in rows]
    answers = [row["messages"][-1]["content"] for row in rows]
    planted = range(0, len(rows), 20)  # every 20th row: 5%
    for index in planted:
        prompts[index] += f" {TRIGGER}"
        answers[index] = ODD_ANSWER
    assert trigger_phrases(prompts, answers) == []
    assert [t.indices for t in trigger_phrases(prompts, answers, share=0.06)] == [list(planted)]


def test_a_shared_answer_start_is_enough_for_a_trigger() -> None:
    rows = clean_rows()
    prompts = [user_turn(row) for row in rows]
    answers = [row["messages"][-1]["content"] for row in rows]
    for serial, index in enumerate(TRIGGER_ROWS):
        prompts[index] += f" {TRIGGER}"
        answers[index] = ODD_ANSWER + f" (ticket {serial})"
    found = trigger_phrases(prompts, answers)
    assert [(t.phrase, t.indices, t.whole_answer) for t in found] == [
        (("cf", "delta", "7"), TRIGGER_ROWS, False)
    ]


def test_unrelated_examples_are_the_outliers_by_embedding(tmp_path: Path) -> None:
    rows = clean_rows()
    planted = plant_unrelated(rows)
    path, examples = as_examples(rows, tmp_path)
    warnings = poisoning_warnings(str(path), examples, clusters_of(examples), cached_embed)
    far = [w for w in warnings if "far from the rest by embedding" in w]
    assert len(far) == 1, warnings
    assert f"{len(planted)} example(s)" in far[0]
    assert sorted(warned_lines(far[0])) == planted
    assert not poisoning_warnings(str(path), examples, clusters_of(examples))  # no embedder: not looked for


def test_the_outlier_warning_lists_the_ten_farthest(tmp_path: Path) -> None:
    rows = clean_rows()
    strays = UNRELATED + MORE_UNRELATED
    planted = list(range(20, 600, 600 // len(strays)))[: len(strays)]
    for index, (question, answer) in zip(planted, strays, strict=True):
        set_turn(rows[index], "user", question)
        set_turn(rows[index], "assistant", answer)
    path, examples = as_examples(rows, tmp_path)
    warnings = poisoning_warnings(str(path), examples, clusters_of(examples), cached_embed)
    assert len(warnings) == 1 and f"{len(strays)} example(s) far from the rest" in warnings[0], warnings
    listed = warned_lines(warnings[0])
    assert len(listed) == 10 and set(listed) < {index + 1 for index in planted}
    assert f"and {len(strays) - 10} more" in warnings[0]


def test_turns_take_the_user_turns_the_answer_and_all_but_the_system_prompt() -> None:
    records = [
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "U"},
                {"role": "assistant", "content": "A"},
            ]
        },
        {"prompt": "Q", "chosen": "good", "rejected": "bad"},
        {"text": "a document"},
    ]
    chat, pair, text = (load_examples([RawRecord(record, "x", 1)])[0][0] for record in records)
    assert turns(chat) == ("U", "A", "U\nA")
    assert turns(pair) == ("Q", "good", "Q\ngood")
    assert turns(text) == ("", "", "a document")


def test_outliers_come_farthest_first() -> None:
    generator = np.random.default_rng(0)
    centre = generator.normal(size=16)
    crowd = centre + 0.3 * generator.normal(size=(200, 16))
    strays = generator.normal(size=(12, 16)) * np.linspace(1, 3, 12)[:, None]
    vectors = np.vstack([crowd, strays])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    found = embedding_outliers(vectors)
    assert {o.index for o in found} == set(range(200, 212))
    assert [o.z_score for o in found] == sorted(o.z_score for o in found)
    assert all(o.z_score < -4 for o in found)


def test_hone_data_check_names_every_planted_attack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_model_dir: Path
) -> None:
    rows = clean_rows()
    trigger_lines = plant_trigger(rows)
    unrelated_lines = plant_unrelated(rows)
    flood_lines = plant_flood(rows)
    path, _ = as_examples(rows, tmp_path)
    command = ["data", "check", "--json", "--outliers", str(path), f"model.reference={tiny_model_dir}"]
    monkeypatch.setattr(sys, "argv", ["hone", *command])
    with pytest.raises(SystemExit) as exited:
        main()
        raise SystemExit(0)
    assert not exited.value.code
    report = json.loads(capsys.readouterr().out)
    poisoning = [w for w in report["warnings"] if POISONING in w]
    assert len(poisoning) == 3, poisoning
    flood, trigger, far = poisoning
    assert "flood of near duplicates" in flood and warned_lines(flood) == flood_lines[:5]
    assert f"trigger phrase {TRIGGER!r}" in trigger and warned_lines(trigger) == trigger_lines
    assert "far from the rest by embedding" in far and sorted(warned_lines(far)) == unrelated_lines
    assert all(w.startswith(f"{path}: ") for w in poisoning)
