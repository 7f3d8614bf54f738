"""The support-ticket reward (examples/support-tickets/reward.py), with answers worked out by hand: 0.1 for
a JSON object, 0.1 more for following the schema, 0.2 per field equal to the reference; prose gets 0.02 for
a "{" and 0.02 per enum field whose reference value it alone names."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support-tickets"
REFERENCE = {"category": "bug", "priority": "high", "product": "nimbus-sync", "summary": "sync stops at 99%"}


@pytest.fixture(scope="module")
def reward() -> ModuleType:
    spec = importlib.util.spec_from_file_location("support_tickets_reward", EXAMPLE / "reward.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reply(obj: object) -> list[dict[str, str]]:
    """A conversational completion as TRL passes it: a list holding the assistant's message."""
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return [{"role": "assistant", "content": text}]


def scores(reward: ModuleType, *objects: object) -> list[float]:
    prompts = [[{"role": "user", "content": "sync is stuck"}]] * len(objects)
    completions = [reply(obj) for obj in objects]
    return reward.score(
        prompts, completions, reference=[json.dumps(REFERENCE)] * len(objects), trainer_state=None
    )


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '"hello"', "Thanks for reaching out!"])
def test_prose_that_names_nothing_scores_zero(reward: ModuleType, text: str) -> None:
    assert scores(reward, text) == [0.0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sounds like a bug in Nimbus Sync.", 0.04),  # category and product named
        ("A BUG, priority High, in nimbus-sync", 0.06),  # all three, any case, - read as a space
        ("Is it a bug or a billing problem in Nimbus Sync?", 0.02),  # two categories: only product counts
        ("The sync is slow, higher than usual", 0.0),  # "sync" is not nimbus-sync, "higher" not "high"
        ('{"category": "bug"', 0.04),  # an unfinished object: the "{" and the category
        ("```python\n{}\n```", 0.02),  # a fence that is not ```json holds no object
        ("bug high nimbus-sync billing low nimbus-pay", 0.0),  # listing values earns nothing
    ],
)
def test_prose_earns_a_little_for_naming_the_right_values(
    reward: ModuleType, text: str, expected: float
) -> None:
    assert scores(reward, text) == [pytest.approx(expected)]


def test_the_reference_itself_scores_one(reward: ModuleType) -> None:
    assert scores(reward, REFERENCE) == [1.0]


def test_a_schema_valid_answer_with_no_field_right_scores_two_tenths(reward: ModuleType) -> None:
    wrong = {"category": "billing", "priority": "low", "product": "nimbus-pay", "summary": "refund please"}
    assert scores(reward, wrong) == [0.2]


def test_each_matching_field_adds_two_tenths(reward: ModuleType) -> None:
    two_right = {**REFERENCE, "product": "nimbus-pay", "summary": "something else"}
    assert scores(reward, two_right) == [pytest.approx(0.2 + 2 * 0.2)]


def test_an_object_off_the_schema_keeps_the_fields_it_got_right(reward: ModuleType) -> None:
    # priority "High" is outside the enum (off schema) but equals "high" case-insensitively.
    off_schema = {"category": "bug", "priority": "High", "extra": 1}
    assert scores(reward, off_schema) == [pytest.approx(0.1 + 2 * 0.2)]
    assert scores(reward, {}) == [0.1]


def test_a_json_fence_and_surrounding_spaces_are_allowed(reward: ModuleType) -> None:
    fenced = "  ```json\n" + json.dumps(REFERENCE) + "\n```  "
    assert scores(reward, fenced) == [1.0]


def test_schema_checks_types_and_lengths(reward: ModuleType) -> None:
    assert not reward.follows_schema({**REFERENCE, "summary": "ab"})  # minLength 3
    assert not reward.follows_schema({**REFERENCE, "summary": "x" * 81})  # maxLength 80
    assert not reward.follows_schema({**REFERENCE, "priority": 3})
    assert reward.follows_schema(REFERENCE)


def test_one_reward_per_completion_in_order_and_plain_strings_work(reward: ModuleType) -> None:
    assert scores(reward, REFERENCE, "nope", {}) == [1.0, 0.0, 0.1]
    assert max(scores(reward, "{ bug high nimbus-sync")) < min(scores(reward, {})), "prose < any object"
    plain = reward.score(["prompt"], [json.dumps(REFERENCE)], reference=[json.dumps(REFERENCE)])
    assert plain == [1.0]
