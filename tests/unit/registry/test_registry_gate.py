"""The promotion gate's rules on hand-made rungs, and the rollback stack of the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hone import contract
from hone.config import HoneConfig
from hone.contract import Ladder
from hone.registry.gate import Contender, general_rule, holder_rule, servable_rule, target_rule
from hone.registry.store import AuditRecord, Version, previous_holder

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "runs" / "evaluation"


def config(**sections: object) -> HoneConfig:
    return HoneConfig.model_validate({"data": {"train": "train.jsonl"}, **sections})


def contender(version: int, exact: list[float], probe: float | None = 0.4, rank: int = 16) -> Contender:
    """A fine-tuned rung from the shipped ladder with the given per-example exact match and probe accuracy."""
    ladder = contract.read(Ladder, ASSETS / "ladder.json")
    rung = ladder.fine_tuned[0].model_copy(deep=True)
    value = sum(exact) / len(exact)
    rung.metrics["exact_match"] = rung.metrics["exact_match"].model_copy(
        update={"value": value, "low": value, "high": value}
    )
    rung.general = rung.general.model_copy(update={"probe_accuracy": probe}) if probe is not None else None
    tags = {"hone.base_model": "smollm2-135m-instruct", "hone.adapter": "lora", "hone.lora_rank": str(rank)}
    entry = Version("support", version, "file:///x", None, 0, "", tags)
    return Contender(entry, rung, {"exact_match": exact})


def test_target_rule_compares_with_the_configured_bar() -> None:
    candidate = contender(2, [1.0, 1.0, 0.0, 1.0])
    passing = target_rule(config(evaluate={"target": {"metric": "exact_match", "min": 0.75}}), candidate)
    assert passing.passed and passing.numbers == {"metric": "exact_match", "value": 0.75, "min": 0.75}
    failing = target_rule(config(evaluate={"target": {"metric": "exact_match", "min": 0.8}}), candidate)
    assert not failing.passed and "0.750 is below the target 0.8" in failing.detail
    assert target_rule(config(), candidate).passed  # no bar configured


def test_holder_rule_refuses_only_a_significant_loss() -> None:
    holder = contender(1, [1.0] * 40)
    much_worse = holder_rule("exact_match", contender(2, [0.0] * 40), holder, 1000, 0)
    assert not much_worse.passed and much_worse.numbers["delta"] == -1.0 and much_worse.numbers["high"] < 0
    one_miss = holder_rule("exact_match", contender(2, [1.0] * 39 + [0.0]), holder, 1000, 0)
    assert one_miss.passed and one_miss.numbers["delta"] == pytest.approx(-0.025)
    better = holder_rule("exact_match", holder, contender(2, [0.0] * 40), 1000, 0)
    assert better.passed and better.numbers["delta"] == 1.0
    assert holder_rule("exact_match", holder, None, 1000, 0).passed


def test_holder_rule_on_a_corpus_metric_compares_intervals() -> None:
    holder, candidate = contender(1, [1.0] * 4), contender(2, [0.0] * 4)
    holder.per_example, candidate.per_example = {}, {}
    assert not holder_rule("exact_match", candidate, holder, 1000, 0).passed
    assert "compared by interval" in holder_rule("exact_match", holder, candidate, 1000, 0).detail


def test_general_rule_allows_the_tolerance_and_no_more() -> None:
    holder = contender(1, [1.0], probe=0.40)
    assert general_rule(contender(2, [1.0], probe=0.36), holder, 0.05).passed
    refused = general_rule(contender(2, [1.0], probe=0.30), holder, 0.05)
    assert not refused.passed and refused.numbers["lost"] == pytest.approx(0.10)
    unmeasured = general_rule(contender(2, [1.0], probe=None), holder, 0.05)
    assert not unmeasured.passed and "no general-capability figures" in unmeasured.detail
    assert general_rule(contender(2, [1.0], probe=0.0), None, 0.05).passed  # no holder: nothing to lose


def test_servable_rule_checks_base_model_and_rank() -> None:
    candidate = contender(2, [1.0], rank=16).version
    assert servable_rule(config(), candidate).passed
    assert not servable_rule(config(serve={"max_lora_rank": 8}), candidate).passed
    other = servable_rule(config(model={"reference": "qwen2.5-0.5b"}), candidate)
    assert not other.passed and "is not the server's 'qwen2.5-0.5b'" in other.detail
    assert servable_rule(config(serve={"base_model": "smollm2-135m-instruct"}), candidate).passed


def record(action: str, to: int, alias: str = "production") -> AuditRecord:
    return AuditRecord(at="t", user="u", action=action, alias=alias, to_version=to)


def test_rollback_replays_promotions_as_a_stack() -> None:
    trail = [record("promote", 1), record("promote", 2), record("force", 3), record("refuse", 4)]
    assert previous_holder(trail, "production", 3) == 2
    trail.append(record("rollback", 2))
    assert previous_holder(trail, "production", 2) == 1  # rolling back again goes further back
    trail.append(record("rollback", 1))
    assert previous_holder(trail, "production", 1) is None
    trail.append(record("promote", 5))
    assert previous_holder(trail, "production", 5) == 1
    assert previous_holder([*trail, record("promote", 9, "staging")], "staging", 9) is None
    assert json.loads(trail[0].model_dump_json())["action"] == "promote"
