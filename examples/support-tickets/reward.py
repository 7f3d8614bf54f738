"""The reward of the support-ticket task for `hone train` with `method: rl`.

    train:
      method: rl
      rl: {reward: examples/support-tickets/reward.py:score}

A reply earns credit in steps, so a policy that cannot yet get the fields right still learns to answer
in the format first: 0.1 for a JSON object, 0.1 more when it follows schema.json, and up to 0.8 for the
fields (category, priority, product, summary) equal to the reference answer's, 0.2 each. A perfect
answer scores 1.0.

A reply that is not a JSON object scores below any object, but not always 0: the base model answers in
prose, and if every one of its replies scored 0, no reply would beat its group and RL would learn
nothing. So prose earns 0.02 for attempting an object (a "{") and 0.02 for each of category, priority
and product whose reference value it names, and no other value of that field (so listing every value
earns nothing); at most 0.08.

Standard library only, and `score` is a pure function of its arguments: the schema is read once, here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SCHEMA: dict[str, Any] = json.loads(Path(__file__).with_name("schema.json").read_text(encoding="utf-8"))
FIELDS: tuple[str, ...] = tuple(SCHEMA["properties"])
ENUM_FIELDS: tuple[str, ...] = tuple(field for field in FIELDS if "enum" in SCHEMA["properties"][field])
FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)

VALID_JSON = 0.1
VALID_SCHEMA = 0.1
PER_FIELD = 0.8 / len(FIELDS)
PROSE_CREDIT = 0.02


def score(prompts: list[Any], completions: list[Any], reference: list[str], **kwargs: Any) -> list[float]:
    """One reward per completion. TRL passes conversational completions as a list of messages (the last is
    the reply) and adds keyword arguments of its own (completion_ids, trainer_state, ...), ignored here."""
    return [
        reply_reward(reply_text(completion), parse_object(answer) or {})
        for completion, answer in zip(completions, reference, strict=True)
    ]


def reply_reward(reply: str, answer: dict[str, Any]) -> float:
    parsed = parse_object(reply)
    if parsed is None:
        named = sum(names_only(reply, field, answer.get(field)) for field in ENUM_FIELDS)
        return round(PROSE_CREDIT * (("{" in reply) + named), 6)
    matched = sum(same_value(parsed.get(field), answer.get(field)) for field in FIELDS)
    return round(VALID_JSON + VALID_SCHEMA * follows_schema(parsed) + PER_FIELD * matched, 6)


def reply_text(completion: Any) -> str:
    """The text of a completion: a plain string, or the content of the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    return str(completion[-1]["content"]) if completion else ""


def parse_object(text: str) -> dict[str, Any] | None:
    """The text as a JSON object, or None. Surrounding whitespace and one ```json fence are allowed."""
    stripped = text.strip()
    fenced = FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def words(text: str) -> str:
    """Lowercase, with - and _ read as spaces: prose says "Nimbus Pay" for nimbus-pay."""
    return " ".join(re.sub(r"[-_]", " ", text.lower()).split())


def names_only(text: str, field: str, want: Any) -> bool:
    """The text names the wanted value of an enum field as a whole word, and no other value of it."""
    spoken = words(text)
    values = SCHEMA["properties"][field]["enum"]
    named = {value for value in values if re.search(rf"\b{re.escape(words(value))}\b", spoken)}
    return named == {want}


def same_value(got: Any, want: Any) -> bool:
    """Equal; strings compared case-insensitively, without surrounding spaces. Missing never matches."""
    if got is None or want is None:
        return False
    if isinstance(got, str) and isinstance(want, str):
        return got.strip().lower() == want.strip().lower()
    return bool(got == want)


def follows_schema(obj: dict[str, Any]) -> bool:
    """schema.json's rules for this task: exactly the required keys, string values, enums and lengths."""
    if set(obj) != set(SCHEMA["required"]):
        return False
    for field, rules in SCHEMA["properties"].items():
        value = obj[field]
        if not isinstance(value, str):
            return False
        if "enum" in rules and value not in rules["enum"]:
            return False
        if not rules.get("minLength", 0) <= len(value) <= rules.get("maxLength", len(value)):
            return False
    return True
