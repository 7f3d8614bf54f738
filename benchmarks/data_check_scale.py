"""python benchmarks/data_check_scale.py --examples 100000

`hone data check` end to end on a large chat file: read and validate every line, normalise, render with
the default model's chat template, tokenise in batches, length statistics, exact and near duplicates,
PII. Target: 100,000 chat examples in under 60 s on the project's 2-core CPU machine.

The file is synthetic (seeded): support-ticket-like messages of 40-80 words drawn from a 3,000-word
vocabulary, a JSON answer each, with 1% exact duplicates, 1% near duplicates and 0.5% carrying an email.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from hone.config import TrainConfig
from hone.data.check import run_data_check
from hone.models.resolve import resolve_model

SYSTEM = "You triage support tickets. Reply with only a JSON object with keys category and priority."


def vocabulary(generator: random.Random, size: int = 3000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(generator.choice(letters) for _ in range(generator.randint(3, 9))) for _ in range(size)]


def write_examples(path: Path, count: int, seed: int) -> None:
    generator = random.Random(seed)
    words = vocabulary(generator)
    texts: list[str] = []
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            roll = generator.random()
            if texts and roll < 0.01:
                text = generator.choice(texts)
            elif texts and roll < 0.02:
                tokens = generator.choice(texts).split()
                tokens[generator.randrange(len(tokens))] = generator.choice(words)
                text = " ".join(tokens)
            else:
                text = " ".join(generator.choice(words) for _ in range(generator.randint(40, 80)))
            if roll > 0.995:
                text += f" reach me at user{index}@example.com"
            texts.append(text)
            answer = {
                "category": generator.choice(["billing", "bug"]),
                "priority": generator.choice(["low", "high"]),
            }
            row = {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": json.dumps(answer)},
                ]
            }
            handle.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model_path = resolve_model("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.jsonl"
        write_examples(path, args.examples, args.seed)
        began = time.perf_counter()
        report = run_data_check({"train": path}, model_path, 512, TrainConfig())
        seconds = time.perf_counter() - began
    split = report.splits[0]
    lengths = split.token_lengths
    duplicates = sum("exact duplicates" in w for w in split.warnings)
    near = sum("near duplicates" in w for w in split.warnings)
    print(f"examples={split.examples} errors={report.error_count} duplicate groups={duplicates} near={near}")
    print(f"pii={split.pii} tokens median={lengths['median']:.0f} total={lengths['total']:,.0f}")
    rate = split.examples / seconds
    print(f"hone data check: {seconds:.1f} s for {split.examples:,} examples ({rate:,.0f}/s)")


if __name__ == "__main__":
    main()
