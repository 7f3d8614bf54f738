"""`hone retrain NAME --from-logs`: the loop from production back to a better model, in one command.

1. The version behind `NAME@production` (the `--from` alias) is read from the registry: its resolved
   config is the recipe, its train split the old data.
2. With `--from-logs`, the request log's corrections become a new dataset version (`hone data from-logs`),
   de-duplicated against the old train split and kept out of the frozen test split. A seeded share of the
   new examples is held out; the rest joins the old train split in a merged dataset version.
3. A new run trains on the merged data with production's recipe.
4. One ladder compares it with production on the frozen test split (with the general check); a second on
   the held-out slice of the new data shows whether it learned what production got wrong.
5. The run is registered, with both ladders, and promoted to `staging` (`--to`) only through the gate.
   A serve route that names `NAME@staging` (the canary) picks it up within `serve.refresh_seconds`.

The report says what the new data fixed and what it broke: the test examples production answered wrongly
and the new version answers rightly, and the reverse.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from hone.config import HoneConfig, ServeFile, load_config
from hone.contract import Ladder, LadderRung
from hone.errors import HoneError
from hone.evaluate.ladder import run_evaluation
from hone.io import atomic_write_json
from hone.registry.gate import Outcome, promote
from hone.registry.refs import Ref
from hone.registry.show import print_gate
from hone.registry.store import Registry, Version
from hone.train.pipeline import run_training

HELD_OUT_FRACTION = 0.2  # of the new examples, kept out of training to show what the new version learned
MIN_NEW_EXAMPLES = 5


@dataclass
class SliceFigures:
    """Production and the new version on one test set, on the ladder's primary metric."""

    test: str
    examples: int
    metric: str
    production: float
    retrained: float
    fixed: int
    broken: int
    fixed_examples: list[str] = field(default_factory=list)
    broken_examples: list[str] = field(default_factory=list)


@dataclass
class Retrained:
    name: str
    production: str
    run: str
    version: str
    new_examples: int
    held_out: int
    dataset: str
    slices: list[SliceFigures]
    promoted: bool
    alias: str
    ladders: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def production_recipe(registry: Registry, name: str, alias: str) -> tuple[Version, Path, HoneConfig]:
    holder = registry.holder(name, alias)
    if holder is None:
        raise HoneError(f"{name}@{alias}: the alias points to no version; promote one first, or pass --from")
    folder = registry.folder(holder)
    config = load_config(folder / "config.yaml")
    for split, path in (("train", config.data.train), ("test", config.data.test)):
        if path is None or not Path(path).exists():
            raise HoneError(
                f"{holder.ref}: its data.{split} split {path} is not here; run where it was trained"
            )
    return holder, folder, config


def hold_out(examples: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(kept for training, held out): a seeded shuffle, at least one held out."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    count = max(1, round(len(examples) * fraction))
    held = set(order[:count])
    kept = [example for index, example in enumerate(examples) if index not in held]
    return kept, [example for index, example in enumerate(examples) if index in held]


def compare_slice(ladder: Ladder, test: str, production: str, retrained: str) -> SliceFigures:
    """The two rungs of a ladder, and the flips between them (from whichever one the ladder compared
    against the other: its baseline is the better of the two)."""
    metric = ladder.primary_metric
    rungs = {rung.name: rung for rung in ladder.rungs}
    old, new = rungs[production], rungs[retrained]
    fixed, broken = flip_lists(old, new)
    return SliceFigures(
        test,
        ladder.task.examples,
        metric,
        old.value(metric),
        new.value(metric),
        len(fixed),
        len(broken),
        fixed[:5],
        broken[:5],
    )


def flip_lists(old: LadderRung, new: LadderRung) -> tuple[list[str], list[str]]:
    """(inputs the new rung gets right and the old wrong, the reverse)."""
    if new.flips is not None and new.flips.vs == old.name:
        return [f.input for f in new.flips.fixed], [f.input for f in new.flips.broken]
    if old.flips is not None and old.flips.vs == new.name:  # old measured against new: reversed
        return [f.input for f in old.flips.broken], [f.input for f in old.flips.fixed]
    return [], []


def ladder_config(config: HoneConfig, name: str, test: Path, general: bool) -> HoneConfig:
    ladder = config.model_copy(deep=True)
    ladder.evaluate.rungs, ladder.evaluate.candidates = [], []
    ladder.evaluate.general.enabled = general
    ladder.data.test = test
    ladder.run.name = name
    return ladder


def retrain(
    settings: ServeFile,
    name: str,
    console: Console,
    *,
    source: str = "production",
    to: str = "staging",
    from_logs: bool = True,
    data: Path | None = None,
    since: str | None = None,
    min_rating: float | None = None,
    out: Path = Path("data/versions"),
    seed: int = 0,
) -> Retrained:
    registry = Registry(settings.track.uri)
    holder, holder_folder, recipe = production_recipe(registry, name, source)
    console.print(f"[bold]Retraining[/] {name} from {holder.ref} ({name}@{source})")
    new = new_examples(settings, recipe, from_logs, data, since, min_rating, out, console)
    kept, held = hold_out(new, HELD_OUT_FRACTION, seed)
    merged = merged_dataset(recipe, kept, held, out)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    config = recipe.model_copy(deep=True)
    config.data.train = merged / "train.jsonl"
    if config.data.validation is not None:
        config.data.validation = merged / "validation.jsonl"
    config.data.test = merged / "test.jsonl"  # the same examples: the run's record names this version
    config.run.name = f"{name}-retrain-{stamp}"
    run = run_training(config, console, track=False)

    names = {holder_folder: holder.rung_name}
    run_name = run.path.name
    slices, ladders = [], []
    for label, test, general in (
        ("frozen test split", merged / "test.jsonl", True),
        ("held-out new data", merged / "held_out.jsonl", False),
    ):
        ladder_name = f"{run_name}-ladder-{'test' if general else 'new'}"
        evaluation, ladder = run_evaluation(
            ladder_config(config, ladder_name, test, general), [holder_folder, run.path], console, names
        )
        ladders.append(str(evaluation.path))
        slices.append(compare_slice(ladder, label, holder.rung_name, run_name))

    version = registry.add(run.path, name)
    console.print(f"[bold]Registered[/] {version.ref} (sha256 {version.sha256[:16]})")
    outcome: Outcome = promote(registry, Ref(version.name, version.version), to, console, against=source)
    print_gate(outcome, console)
    result = Retrained(
        name,
        holder.ref,
        str(run.path),
        version.ref,
        len(new),
        len(held),
        str(merged),
        slices,
        outcome.moved,
        to,
        ladders,
    )
    atomic_write_json(run.path / "retrain.json", result.to_dict())
    return result


def new_examples(
    settings: ServeFile,
    recipe: HoneConfig,
    from_logs: bool,
    data: Path | None,
    since: str | None,
    min_rating: float | None,
    out: Path,
    console: Console,
) -> list[Any]:
    """The examples production taught: the log's corrections (a dataset version of their own, so their
    provenance is kept) and the --data file's."""
    from hone.data.load import load_split
    from hone.operate.from_logs import dataset_from_logs

    examples: list[Any] = []
    if from_logs:
        logged = dataset_from_logs(
            settings,
            out,
            since=since,
            min_rating=min_rating,
            include_rated=min_rating is not None,
            train=recipe.data.train,
            test=recipe.data.test,
            version=None,
        )
        console.print(f"From the logs: {logged.folder}")
        examples += logged.train
    if data is not None:
        examples += load_split(data, recipe.data.system_prompt)
    if len(examples) < MIN_NEW_EXAMPLES:
        raise HoneError(
            f"{len(examples)} new training examples; retraining needs at least {MIN_NEW_EXAMPLES} (more "
            "corrections, a longer --since, --min-rating, or --data)"
        )
    return examples


def merged_dataset(recipe: HoneConfig, kept: list[Any], held: list[Any], out: Path) -> Path:
    """A dataset version of the old splits with the new examples added to train, and the held-out new
    examples as a split of their own (`held_out`); the test split is the old one, unchanged (frozen)."""
    from hone.data.load import load_split
    from hone.data.prepare import write_dataset_version
    from hone.data.version import dataset_hash

    data = recipe.data
    old = {"train": data.train, "validation": data.validation, "test": data.test}
    files = {name: load_split(Path(path), data.system_prompt) for name, path in old.items() if path}
    files["train"] = files["train"] + kept
    files["held_out"] = held
    version = dataset_hash(files)
    card = {
        "version": version,
        "sources": {name: str(path) for name, path in old.items() if path is not None},
        "new_examples": {"train": len(kept), "held_out": len(held)},
        "splits": {name: {"examples": len(members)} for name, members in files.items()},
    }
    return write_dataset_version(out, version, files, card)


def print_retrained(result: Retrained, console: Console) -> None:
    for figures in result.slices:
        console.print(
            f"[bold]{figures.test}[/] ({figures.examples} examples, {figures.metric}): production "
            f"{result.production} {figures.production:.3f} -> {result.version} {figures.retrained:.3f}; "
            f"fixed {figures.fixed}, broke {figures.broken}"
        )
        for text in figures.fixed_examples[:3]:
            console.print(f"    fixed: {text[:100]!r}", markup=False, highlight=False)
        for text in figures.broken_examples[:3]:
            console.print(f"    broke: {text[:100]!r}", markup=False, highlight=False)
    if result.promoted:
        console.print(f"[bold green]Promoted[/] {result.version} -> {result.name}@{result.alias}")
    else:
        console.print(f"[bold yellow]The gate refused[/] {result.version} for {result.name}@{result.alias}")
