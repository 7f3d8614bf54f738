"""python benchmarks/data_poisoning.py --examples 10000 [--outliers]

The poisoning checks of `hone data check` (hone.data.poisoning) timed on the example task's train.jsonl
(600 examples) and on `--examples` tickets drawn by the example task's own generator (distinct texts, the
same kinds of label): the duplicate clusters (hone.data.checks' exact and near duplicates), the flood and
trigger-phrase checks, and with `--outliers` the embedding of every example (the local all-MiniLM-L6-v2,
loaded once, timed apart) and the nearest-neighbour outlier search.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hone.data import checks
from hone.data.check import example_text
from hone.data.formats import Example, load_examples
from hone.data.poisoning import duplicate_clusters, embedding_outliers, poisoning_warnings, turns
from hone.data.sources import RawRecord, read_all

TASK = Path(__file__).resolve().parents[1] / "examples" / "support-tickets"


def generated_tickets(count: int, seed: int) -> list[dict]:
    """`count` distinct tickets from examples/support-tickets/generate.py (its schedule and redraws)."""
    spec = importlib.util.spec_from_file_location("support_tickets_generate", TASK / "generate.py")
    assert spec and spec.loader
    generate = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generate  # dataclasses look their module up while it executes
    spec.loader.exec_module(generate)
    rng = random.Random(seed)
    seen: set[str] = set()
    return [
        generate.draw_unique(rng, issue, priority, seen) for issue, priority in generate.schedule(rng, count)
    ]


def timed(seconds: dict[str, float], label: str, function: Callable[..., Any], *args: Any) -> Any:
    began = time.perf_counter()
    result = function(*args)
    seconds[label] = time.perf_counter() - began
    print(f"  {label}: {seconds[label]:.2f} s")
    return result


def measure(name: str, examples: list[Example], outliers: bool) -> dict[str, Any]:
    """Seconds per step, the flood and trigger warnings and (with `outliers`) the outliers of one set."""
    print(f"{name}: {len(examples)} examples")
    seconds: dict[str, float] = {}
    texts = [example_text(example) for example in examples]
    exact = timed(seconds, "exact duplicates", checks.exact_duplicates, texts)
    near = timed(seconds, "near duplicates (MinHash)", checks.near_duplicates, texts)
    clusters = duplicate_clusters(len(texts), exact, near)
    warnings = timed(seconds, "floods + trigger phrases", poisoning_warnings, name, examples, clusters)
    print(f"  {len(warnings)} flood/trigger warning(s)" + "".join(f"\n    {w[:300]}" for w in warnings[:3]))
    result: dict[str, Any] = {"examples": len(examples), "seconds": seconds, "warnings": warnings}
    if outliers:
        from hone.models.embedder import embed

        contents = [turns(example)[2] for example in examples]
        vectors = timed(seconds, "embed every example", embed, contents)
        result["outliers"] = timed(seconds, "nearest-neighbour outliers", embedding_outliers, vectors)
        print(f"  {len(result['outliers'])} outlier(s) by embedding")
    return result


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outliers", action="store_true", help="Also time the embedding outlier search.")
    args = parser.parse_args(argv)
    if args.outliers:
        from hone.models.embedder import embedder

        timed({}, "load the embedder", embedder)
    records, _ = read_all(TASK / "train.jsonl")
    rows = generated_tickets(args.examples, args.seed)
    generated = load_examples(RawRecord(row, "generated", line) for line, row in enumerate(rows, 1))[0]
    return {
        "example task": measure(
            "examples/support-tickets/train.jsonl", load_examples(records)[0], args.outliers
        ),
        "generated": measure(f"{args.examples} generated tickets", generated, args.outliers),
    }


if __name__ == "__main__":
    main()
