"""The promotion gate: a version takes an alias only if the ladder says it should.

The gate reads one ladder that holds both the candidate and the alias's current holder, on one frozen test
split: a ladder registered with the candidate, one the gate ran before for the same pair, or a new one
(the two fine-tuned rungs and the base model's general check; no prompting rungs, which a promotion
does not need). Four rules, each reported with its numbers:

    target    the candidate reaches evaluate.target (when one is configured)
    holder    the candidate is not significantly worse than the holder on the primary metric
              (paired bootstrap over the same examples, resamples and seed as the ladder's)
    general   the candidate loses at most registry.gate.general_tolerance of general-probe accuracy
              against the holder
    servable  same base model as the server holds (serve.base_model), LoRA rank within serve.max_lora_rank

Without a holder there is nothing to be worse than: the target alone decides, and the general change
against the base model is shown for information.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from hone import contract
from hone.config import HoneConfig, load_config
from hone.contract import Ladder, LadderRung
from hone.errors import HoneError
from hone.evaluate.ladder import run_evaluation
from hone.evaluate.stats import paired_bootstrap
from hone.registry.refs import Ref, check_alias
from hone.registry.store import AuditRecord, Registry, Version, os_user, previous_holder
from hone.runs import LADDER, now
from hone.track import log_run

GATE_LADDER_TAG = "hone.gate_ladder.v"  # + the holder's version: the MLflow run holding that gate's ladder
TIE = 1e-12


@dataclass
class Rule:
    name: str
    passed: bool
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        return {"rule": self.name, "passed": self.passed, "detail": self.detail, **self.numbers}


@dataclass
class Contender:
    """A version as one rung of the gate's ladder, with its per-example scores."""

    version: Version
    rung: LadderRung
    per_example: dict[str, list[float]]


@dataclass
class GateLadder:
    ladder: Ladder
    source: str  # where it came from, for the audit record
    candidate: Contender
    holder: Contender | None


@dataclass
class Outcome:
    candidate: Version
    alias: str
    holder: Version | None
    rules: list[Rule]
    moved: bool
    record: AuditRecord | None
    ladder: str | None = None

    @property
    def passed(self) -> bool:
        return all(rule.passed for rule in self.rules)


# The rules: pure functions of the ladder's figures ----------------------------------------------------


def target_rule(config: HoneConfig, candidate: Contender) -> Rule:
    target = config.evaluate.target
    if target is None:
        return Rule("target", True, "no target configured (evaluate.target)")
    if target.metric not in candidate.rung.metrics:
        return Rule("target", False, f"the ladder did not measure {target.metric}", {"min": target.min})
    value = candidate.rung.value(target.metric)
    passed = value >= target.min - TIE
    verb = "reaches" if passed else "is below"
    return Rule(
        "target",
        passed,
        f"{target.metric} {value:.3f} {verb} the target {target.min:g}",
        {"metric": target.metric, "value": value, "min": target.min},
    )


def holder_rule(
    metric: str, candidate: Contender, holder: Contender | None, resamples: int, seed: int
) -> Rule:
    if holder is None:
        return Rule("holder", True, "no current holder to compare with")
    if metric in candidate.per_example and metric in holder.per_example:
        before = np.asarray(holder.per_example[metric], dtype=float)
        after = np.asarray(candidate.per_example[metric], dtype=float)
        paired = paired_bootstrap(before, after, len(after), resamples, seed)
        worse = paired.significant and paired.delta < 0
        numbers = {
            "metric": metric,
            "candidate": float(after.mean()),
            "holder": float(before.mean()),
            "delta": paired.delta,
            "low": paired.low,
            "high": paired.high,
            "p_value": paired.p_value,
        }
        detail = (
            f"{metric} {numbers['candidate']:.3f} vs holder {numbers['holder']:.3f}: "
            f"delta {paired.delta:+.3f} "
            f"(95% CI {paired.low:+.3f} to {paired.high:+.3f}, p={paired.p_value:.3f})"
        )
        return Rule("holder", not worse, detail + (": significantly worse" if worse else ""), numbers)
    # a corpus metric (BLEU, macro-F1) has no per-example values to pair: its intervals decide
    mine, theirs = candidate.rung.metrics[metric], holder.rung.metrics[metric]
    worse = mine.high < theirs.low
    numbers = {"metric": metric, "candidate": mine.value, "holder": theirs.value}
    detail = (
        f"{metric} {mine.value:.3f} [{mine.low:.3f}, {mine.high:.3f}] vs holder {theirs.value:.3f} "
        f"[{theirs.low:.3f}, {theirs.high:.3f}] (a corpus metric: compared by interval)"
    )
    return Rule("holder", not worse, detail + (": significantly worse" if worse else ""), numbers)


def general_rule(candidate: Contender, holder: Contender | None, tolerance: float) -> Rule:
    mine = candidate.rung.general
    if holder is None:
        shown = f"; {mine.delta_probe_accuracy:+.3f} against the base model" if mine else ""
        return Rule("general", True, f"no current holder to lose capability against{shown}")
    theirs = holder.rung.general
    if mine is None or theirs is None:
        return Rule(
            "general", False, "the ladder has no general-capability figures (evaluate.general.enabled is off)"
        )
    lost = theirs.probe_accuracy - mine.probe_accuracy
    passed = lost <= tolerance + TIE
    numbers = {
        "candidate": mine.probe_accuracy,
        "holder": theirs.probe_accuracy,
        "lost": lost,
        "tolerance": tolerance,
    }
    detail = (
        f"general probe accuracy {mine.probe_accuracy:.3f} vs holder {theirs.probe_accuracy:.3f}: "
        f"{'lost' if lost > 0 else 'gained'} {abs(lost):.3f} "
        f"({'within' if passed else 'beyond'} the tolerance {tolerance:g})"
    )
    return Rule("general", passed, detail, numbers)


def servable_rule(config: HoneConfig, candidate: Version) -> Rule:
    base = config.serve.base_model or config.model.reference
    problems = []
    candidate_base = candidate.tags.get("hone.base_model")
    if candidate.tags.get("hone.adapter") != "full" and candidate_base != base:
        problems.append(f"its base model {candidate_base!r} is not the server's {base!r}")
    rank = candidate.tags.get("hone.lora_rank")
    limit = config.serve.max_lora_rank
    if rank is not None and int(rank) > limit:
        problems.append(f"LoRA rank {rank} is above the server's limit {limit} (serve.max_lora_rank)")
    numbers = {
        "base_model": candidate_base,
        "server_base_model": base,
        "lora_rank": rank,
        "max_lora_rank": limit,
    }
    if problems:
        return Rule("servable", False, "; ".join(problems), numbers)
    shown = f", LoRA rank {rank} <= {limit}" if rank is not None else ", a full model served on its own"
    return Rule("servable", True, f"base model {base}{shown}", numbers)


def gate_rules(config: HoneConfig, found: GateLadder) -> list[Rule]:
    settings = config.evaluate
    metric = found.ladder.primary_metric
    return [
        target_rule(config, found.candidate),
        holder_rule(metric, found.candidate, found.holder, settings.bootstrap_resamples, settings.seed),
        general_rule(found.candidate, found.holder, config.registry.gate.general_tolerance),
        servable_rule(config, found.candidate.version),
    ]


# Finding or running the ladder ------------------------------------------------------------------------


def rung_names(version: Version) -> tuple[str, ...]:
    """The names a version's rung has in a ladder: its run's name, or `<name>-v<N>` in a gate ladder."""
    return (version.rung_name, version.tags.get("hone.run_name", ""))


def contender(ladder: Ladder, folder: Path, version: Version, taken: str | None = None) -> Contender | None:
    """The version's fine-tuned rung in this ladder with its per-example scores, or None."""
    for rung in ladder.fine_tuned:
        if rung.name in rung_names(version) and rung.name != taken:
            predictions = folder / "eval" / f"{rung.name}.jsonl"
            per_example: dict[str, list[float]] = {}
            if predictions.is_file():
                rows = [
                    json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line
                ]
                for name in rows[0]["scores"] if rows else []:
                    per_example[name] = [float(row["scores"][name]) for row in rows]
            return Contender(version, rung, per_example)
    return None


def from_folder(
    folder: Path, candidate: Version, holder: Version | None, source: str, test_hash: str | None = None
) -> GateLadder | None:
    """A ladder in `folder` that holds the candidate (and the holder, when there is one), on the test split
    whose hash is `test_hash` when given, else None."""
    if not (folder / LADDER).is_file():
        return None
    ladder = contract.read(Ladder, folder / LADDER)
    if test_hash is not None and ladder.task.dataset_hash != test_hash:
        return None  # another test set (a retrain's held-out slice of new data): not what the gate judges on
    mine = contender(ladder, folder, candidate)
    if mine is None:
        return None
    theirs = contender(ladder, folder, holder, taken=mine.rung.name) if holder else None
    if holder is not None and theirs is None:
        return None
    return GateLadder(ladder, source, mine, theirs)


def registered_ladder(
    registry: Registry,
    candidate: Version,
    folder: Path,
    holder: Version | None,
    scratch: Path,
    test_hash: str | None = None,
) -> GateLadder | None:
    """A ladder that already holds both: registered with the candidate, or run by the gate before."""
    evaluations = folder / "evaluations"
    for evaluation in sorted(evaluations.iterdir()) if evaluations.is_dir() else []:
        where = f"{candidate.ref} evaluations/{evaluation.name}"
        found = from_folder(evaluation, candidate, holder, where, test_hash)
        if found is not None:
            return found
    run_id = candidate.tags.get(f"{GATE_LADDER_TAG}{holder.version if holder else 0}")
    if run_id is None:
        return None
    try:
        fetched = Path(registry.client.download_artifacts(run_id, "", str(scratch)))
    except Exception:  # the gate's earlier run was deleted from the store: run the ladder again
        return None
    return from_folder(fetched, candidate, holder, f"MLflow run {run_id}")


def run_gate_ladder(
    registry: Registry,
    config: HoneConfig,
    candidate: tuple[Version, Path],
    holder: tuple[Version, Path] | None,
    console: Console,
) -> GateLadder:
    """A new ladder of the two versions on the config's test split, in an evaluation run of its own."""
    gate_config = config.model_copy(deep=True)
    gate_config.evaluate.rungs, gate_config.evaluate.candidates = [], []
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    version = candidate[0]
    against = f"-vs-v{holder[0].version}" if holder else ""
    gate_config.run.name = f"gate-{version.name}-v{version.version}{against}-{stamp}"
    pairs = [entry for entry in (holder, candidate) if entry is not None]
    names = {folder: entry.rung_name for entry, folder in pairs}
    run, _ = run_evaluation(gate_config, [folder for _, folder in pairs], console, names)
    if config.track.enabled:
        run_id = log_run(run.path, registry.uri, config.track.experiment)
        registry.set_tag(version, f"{GATE_LADDER_TAG}{holder[0].version if holder else 0}", run_id)
    found = from_folder(run.path, version, holder[0] if holder else None, str(run.path))
    assert found is not None  # the ladder just run holds both
    return found


# Promotion and rollback -------------------------------------------------------------------------------


def test_hash(config: HoneConfig) -> str | None:
    """The content hash of the config's test split, as a ladder records it; None when it cannot be read
    here (then any ladder holding both versions will do, as before the split was known)."""
    from hone.data.load import load_split
    from hone.data.version import dataset_hash

    if config.data.test is None or not Path(config.data.test).is_file():
        return None
    try:
        test = load_split(Path(config.data.test), config.data.system_prompt, config.data.format)
        return dataset_hash({"test": test})
    except HoneError:
        return None


def gate_config(folder: Path, config_path: Path | None, overrides: list[str] | None) -> HoneConfig:
    """The gate's settings: the given config, else the candidate's own resolved config."""
    return load_config(config_path or folder / "config.yaml", overrides)


def promote(
    registry: Registry,
    ref: Ref,
    alias: str,
    console: Console,
    config_path: Path | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    reason: str | None = None,
    against: str | None = None,
) -> Outcome:
    """Move `alias` to the version `ref` names if the gate passes (or `force` with a `reason`); audited.

    The gate compares the candidate with the alias's holder, or with the holder of `against` when given
    (a candidate for `staging` is judged against `production`, not against the previous candidate)."""
    check_alias(alias)
    if force and not (reason and reason.strip()):
        raise HoneError('--force needs --reason "...": a forced promotion is recorded with why')
    candidate = registry.version(ref)
    folder = registry.folder(candidate)  # a tampered candidate is refused before anything runs
    previous = registry.holder(candidate.name, alias)
    if previous is not None and previous.version == candidate.version:
        return Outcome(candidate, alias, previous, [], moved=False, record=None)
    holder = previous if against is None else registry.holder(candidate.name, check_alias(against))
    if holder is not None and holder.version == candidate.version:
        holder = None  # the candidate already holds `against`: nothing to compare it with but the target
    holder_folder = registry.folder(holder) if holder else None
    config = gate_config(folder, config_path, overrides)
    source: str | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="hone-gate-") as scratch:
            found = registered_ladder(registry, candidate, folder, holder, Path(scratch), test_hash(config))
            if found is None:
                pair = (holder, holder_folder) if holder is not None and holder_folder is not None else None
                found = run_gate_ladder(registry, config, (candidate, folder), pair, console)
            rules, source = gate_rules(config, found), found.source
    except HoneError as exc:
        if not force:
            raise
        rules = [Rule("gate", False, f"not evaluated: {exc}")]  # forced past a gate that could not run
    passed = all(rule.passed for rule in rules)
    action = "promote" if passed else ("force" if force else "refuse")
    record = AuditRecord(
        at=now(),
        user=os_user(),
        action=action,
        alias=alias,
        from_version=previous.version if previous else None,
        to_version=candidate.version,
        reason=reason,
        gate=[rule.as_record() for rule in rules],
        ladder=source,
    )
    moved = action != "refuse"
    if moved:
        registry.point(candidate.name, alias, candidate.version)
    registry.record(candidate.name, record)
    return Outcome(candidate, alias, holder, rules, moved, record, source)


def rollback(registry: Registry, name: str, alias: str, reason: str | None = None) -> AuditRecord:
    """Point `alias` back to the version it held before its current one, from the audit trail."""
    check_alias(alias)
    registry.model_exists(name)
    current = registry.holder(name, alias)
    if current is None:
        raise HoneError(f"{name}@{alias}: the alias points to no version; nothing to roll back")
    previous = previous_holder(registry.history(name), alias, current.version)
    if previous is None:
        raise HoneError(
            f"{name}@{alias}: no earlier holder of {alias!r} in the audit trail "
            f"(version {current.version} is the first); nothing to roll back to"
        )
    target = registry.version(Ref(name, previous))
    registry.folder(target)  # never point an alias at files that fail their hash
    registry.point(name, alias, previous)
    record = AuditRecord(
        at=now(),
        user=os_user(),
        action="rollback",
        alias=alias,
        from_version=current.version,
        to_version=previous,
        reason=reason,
    )
    registry.record(name, record)
    return record
