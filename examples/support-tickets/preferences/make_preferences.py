"""python examples/support-tickets/preferences/make_preferences.py

Deterministic preference pairs for the support-tickets task, for DPO and reward-model training
(configs/dpo.yaml, configs/reward.yaml).

Each pair takes one chat example of the task (examples/support-tickets/{train,validation}.jsonl): its
system and user turns are the prompt, its JSON answer is `chosen`, and `rejected` is a mistake a small
model really makes on this task:

- a wrong field (60%): one of category, priority, product or summary replaced by another allowed value.
  The answer still parses and fits the schema, so only the label tells the two apart;
- invalid JSON (20%): single quotes, unquoted keys, a trailing comma, or the closing brace cut off;
- prose (20%): the right facts as sentences, as a list, or as JSON wrapped in chat.

Rows are in TRL's conversational preference format, {"prompt": [...], "chosen": [...], "rejected": [...]}.
Options: --seed (default 11) and --out (default: this folder). The same seed always gives byte-identical
train.jsonl (300 pairs, from the task's train split) and validation.jsonl (50, from its validation split).
Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASK = HERE.parent
sys.path.insert(0, str(TASK))
from generate import write_jsonl  # noqa: E402  the task generator's atomic JSONL writer, one copy

SPLIT_SIZES: dict[str, int] = {"train": 300, "validation": 50}
FIELDS = ("category", "priority", "product", "summary")
# How often each kind of mistake is the rejected answer, and which field a wrong-field mistake touches:
# priority and product are the cues a small model confuses most (a priority phrase, a product alias).
MISTAKES = {"wrong_field": 0.6, "invalid_json": 0.2, "prose": 0.2}
FIELD_WEIGHTS = {"category": 0.2, "priority": 0.3, "product": 0.3, "summary": 0.2}


def allowed_values(source_rows: list[dict]) -> dict[str, list[str]]:
    """Every value a field may take: the schema's enums, and the summaries the task uses."""
    schema = json.loads((TASK / "schema.json").read_text(encoding="utf-8"))
    values = {name: list(schema["properties"][name]["enum"]) for name in ("category", "priority", "product")}
    values["summary"] = sorted({answer(row)["summary"] for row in source_rows})
    return values


def answer(row: dict) -> dict[str, str]:
    return json.loads(row["messages"][-1]["content"])


def display_name(product: str) -> str:
    """The name customers write: nimbus-pay -> Nimbus Pay."""
    return " ".join(part.capitalize() for part in product.split("-"))


def wrong_field(rng: random.Random, fields: dict[str, str], values: dict[str, list[str]]) -> str:
    name = rng.choices(list(FIELD_WEIGHTS), weights=list(FIELD_WEIGHTS.values()))[0]
    others = [value for value in values[name] if value != fields[name]]
    return json.dumps({**fields, name: rng.choice(others)})


def invalid_json(rng: random.Random, fields: dict[str, str]) -> str:
    correct = json.dumps(fields)
    variant = rng.choice(("single_quotes", "unquoted_keys", "trailing_comma", "cut_off"))
    if variant == "single_quotes":
        return str(fields)
    if variant == "unquoted_keys":
        return "{" + ", ".join(f'{name}: "{fields[name]}"' for name in FIELDS) + "}"
    if variant == "trailing_comma":
        return correct[:-1] + ",}"
    return correct[:-1]


def prose(rng: random.Random, fields: dict[str, str]) -> str:
    category, priority = fields["category"].replace("_", " "), fields["priority"]
    product, summary = display_name(fields["product"]), fields["summary"]
    variant = rng.choice(("sentences", "list", "chatty_json"))
    if variant == "sentences":
        return (
            f"This is a {category} ticket about {product} with {priority} priority. "
            f"The customer's issue: {summary}."
        )
    if variant == "list":
        return "\n".join(f"{name.capitalize()}: {fields[name]}" for name in FIELDS)
    fenced = f"```json\n{json.dumps(fields)}\n```"
    return f"Sure! Here is the triage for this ticket:\n{fenced}\nLet me know if you need more."


def rejected_answer(rng: random.Random, fields: dict[str, str], values: dict[str, list[str]]) -> str:
    mistake = rng.choices(list(MISTAKES), weights=list(MISTAKES.values()))[0]
    if mistake == "wrong_field":
        return wrong_field(rng, fields, values)
    if mistake == "invalid_json":
        return invalid_json(rng, fields)
    return prose(rng, fields)


def preference_pair(rng: random.Random, row: dict, values: dict[str, list[str]]) -> dict:
    *prompt, reply = row["messages"]
    rejected = rejected_answer(rng, answer(row), values)
    return {"prompt": prompt, "chosen": [reply], "rejected": [{"role": "assistant", "content": rejected}]}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_splits(seed: int) -> dict[str, list[dict]]:
    """A seeded sample of each chat split (kept in file order), each with a seeded rejected answer."""
    rng = random.Random(seed)
    sources = {split: read_jsonl(TASK / f"{split}.jsonl") for split in SPLIT_SIZES}
    values = allowed_values([row for rows in sources.values() for row in rows])
    splits = {}
    for split, size in SPLIT_SIZES.items():
        rows = sources[split]
        picked = sorted(rng.sample(range(len(rows)), size))
        splits[split] = [preference_pair(rng, rows[index], values) for index in picked]
    return splits


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Generate the support-tickets preference pairs.")
    parser.add_argument("--seed", type=int, default=11, help="random seed (default: 11)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in build_splits(args.seed).items():
        write_jsonl(args.out / f"{split}.jsonl", rows)
        print(f"wrote {len(rows)} pairs to {args.out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
