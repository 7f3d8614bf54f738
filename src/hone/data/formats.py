"""Turn the dataset formats people already have into one canonical `Example`.

Supported formats, by the keys that identify them (checked in this order, so a record carrying extra
columns still lands on the most specific format):

- `openai_dpo`: {"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}
- `preference`: {"prompt", "chosen", "rejected"} (TRL); without "prompt", chosen and rejected are full
  conversations and their shared leading turns are the prompt
- `messages`: {"messages": [...]} (OpenAI chat fine-tuning; "tools"/"functions" are ignored)
- `alpaca`: {"instruction", "output", optional "input", optional "system"}
- `prompt_completion`: {"prompt", "completion"}, strings or lists of messages
- `text`: {"text": "..."} for continued pre-training

A key whose value is null counts as absent, because Parquet files and `datasets` folders fill missing
columns with nulls. Every problem is a `HoneError` worded "FILE line N: FIELD: problem".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from hone.data.sources import RawRecord, json_type
from hone.errors import HoneError, listed, located, quoted

FORMATS: dict[str, tuple[str, ...]] = {
    "openai_dpo": ("input", "preferred_output", "non_preferred_output"),
    "preference": ("chosen", "rejected"),
    "messages": ("messages",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
CHAT_ROLES = ("system", "user", "assistant")
# Tool results only make sense next to the tool calls of the OpenAI messages format.
MESSAGES_ROLES = (*CHAT_ROLES, "tool")


@dataclass
class Example:
    """One training example, whatever file format it came from.

    chat: `messages` is the whole conversation. preference: `messages` is the prompt and `chosen` /
    `rejected` are the competing assistant replies. text: `text` is the document, `messages` is empty.
    A message is {"role", "content"}, plus "weight" (0 or 1) on assistant turns whose source had one;
    weight 0 means the turn is context only, with no loss on it.
    """

    kind: Literal["chat", "preference", "text"]
    messages: list[dict[str, Any]]
    chosen: list[dict[str, Any]] | None
    rejected: list[dict[str, Any]] | None
    text: str | None
    source: str
    line: int


class _Invalid(Exception):
    """A problem in one field, raised deep in validation and located once at the top."""

    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def detect_format(data: dict[str, Any]) -> str | None:
    """The first format whose identifying keys are all present (non-null), or None."""
    for name, keys in FORMATS.items():
        if all(_present(data, key) for key in keys):
            return name
    return None


def normalise(record: RawRecord, fmt: str | None = None, system_prompt: str | None = None) -> Example:
    """Check one record against a format (detected when `fmt` is None or "auto") and build its `Example`.

    `system_prompt` becomes the first message of chat and preference examples that have no system
    message, so one default can be set for a whole dataset without editing it.
    """
    name = detect_format(record.data) if fmt in (None, "auto") else fmt
    if name is not None and name not in FORMATS:
        raise HoneError(f"unknown data format {name!r}; expected auto or one of {', '.join(FORMATS)}")
    try:
        if name is None:
            raise _unrecognised(record.data)
        _require(record.data, name)
        kind, messages, chosen, rejected, text = _NORMALISERS[name](record.data)
    except _Invalid as exc:
        raise HoneError(located(record.source, exc.problem, record.line, exc.field)) from None
    if system_prompt and kind != "text" and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return Example(kind, messages, chosen, rejected, text, record.source, record.line)


def load_examples(
    records: Iterable[RawRecord], fmt: str = "auto", system_prompt: str | None = None
) -> tuple[list[Example], list[str]]:
    """Normalise every record, collecting every problem instead of stopping at the first.

    With `fmt="auto"` each file's format is that of its first recognised record, and a record of another
    format is an error: a file mixing formats is almost always a concatenation mistake.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise HoneError(f"unknown data format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    examples: list[Example] = []
    errors: list[str] = []
    first: dict[str, tuple[str, int]] = {}
    for record in records:
        try:
            name = fmt if fmt != "auto" else _file_format(record, first)
            examples.append(normalise(record, name, system_prompt))
        except HoneError as exc:
            errors.append(str(exc))
    return examples, errors


def _file_format(record: RawRecord, first: dict[str, tuple[str, int]]) -> str:
    """The format a record must have: its file's, fixed by the file's first recognised record."""
    detected = detect_format(record.data)
    if record.source not in first:
        if detected is None:
            exc = _unrecognised(record.data)
            raise HoneError(located(record.source, exc.problem, record.line, exc.field))
        first[record.source] = (detected, record.line)
        return detected
    expected, line = first[record.source]
    if detected is not None and detected != expected:
        raise HoneError(
            located(
                record.source,
                f"mixed formats: this line is {detected} but the file is {expected} (from line {line})",
                record.line,
            )
        )
    # An unrecognised record is checked as the file's format, which names the key it lacks.
    return expected


def _present(data: dict[str, Any], key: str) -> bool:
    return data.get(key) is not None


def _require(data: dict[str, Any], name: str) -> None:
    for key in FORMATS[name]:
        if not _present(data, key):
            raise _Invalid(key, f"missing (the {name} format needs {', '.join(FORMATS[name])})")


def _unrecognised(data: dict[str, Any]) -> _Invalid:
    """Point at the closest format's missing key, since a typo in one column name is the usual cause."""
    keys = listed(sorted(str(key) for key in data if data[key] is not None)) or "none"
    scores = {
        name: sum(_present(data, key) for key in needed) / len(needed) for name, needed in FORMATS.items()
    }
    closest = max(scores, key=lambda name: scores[name])
    if scores[closest] == 0:
        expected = "; ".join(f"{name} ({', '.join(needed)})" for name, needed in FORMATS.items())
        return _Invalid(
            None, f"unrecognised record with keys {keys}; expected one of the formats: {expected}"
        )
    missing = next(key for key in FORMATS[closest] if not _present(data, key))
    needed = ", ".join(FORMATS[closest])
    return _Invalid(
        missing, f"missing; the keys ({keys}) look like the {closest} format, which needs {needed}"
    )


def _string(data: dict[str, Any], key: str, empty: str = "is empty") -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _Invalid(key, f"expected a string, got {json_type(value)}")
    if not value.strip():
        raise _Invalid(key, empty)
    return value


def _optional_string(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Invalid(key, f"expected a string, got {json_type(value)}")
    return value


def _message(message: Any, where: str, roles: tuple[str, ...]) -> dict[str, Any]:
    """Keep role, content and a valid weight; other keys (name, tool_call_id) do not reach training."""
    if not isinstance(message, dict):
        raise _Invalid(where, f"expected an object, got {json_type(message)}")
    role, content = message.get("role"), message.get("content")
    if role not in roles:
        raise _Invalid(
            f"{where}.role", f"role {quoted(role)}; expected {'one of ' * (len(roles) > 1)}{', '.join(roles)}"
        )
    if not isinstance(content, str):
        calls = message.get("tool_calls") or message.get("function_call")
        hint = "; assistant tool calls are not supported" if calls else ""
        raise _Invalid(f"{where}.content", f"expected a string, got {json_type(content)}{hint}")
    if role == "assistant" and not content.strip():
        raise _Invalid(f"{where}.content", "assistant message is empty")
    kept: dict[str, Any] = {"role": role, "content": content}
    weight = message.get("weight")
    if weight is not None:
        if role != "assistant":
            raise _Invalid(f"{where}.weight", "only assistant messages can carry a weight")
        if isinstance(weight, bool) or weight not in (0, 1):
            raise _Invalid(f"{where}.weight", f"expected 0 or 1, got {quoted(weight)}")
        kept["weight"] = int(weight)
    return kept


def _messages(value: Any, field: str, roles: tuple[str, ...] = CHAT_ROLES) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else json_type(value)
        raise _Invalid(field, f"expected a non-empty list of {{role, content}} objects, got {got}")
    return [_message(message, f"{field}[{index}]", roles) for index, message in enumerate(value)]


def _turns(value: Any, field: str, role: str) -> list[dict[str, Any]]:
    """A plain string is one message in `role`; a list is a conversation, as in TRL's conversational form."""
    if isinstance(value, str):
        if not value.strip():
            raise _Invalid(field, "assistant reply is empty" if role == "assistant" else "is empty")
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return _messages(value, field)
    raise _Invalid(field, f"expected a string or a list of messages, got {json_type(value)}")


def _check_learnable(messages: list[dict[str, Any]], field: str) -> None:
    """A chat example trains only on assistant turns, so it must end on one that carries loss."""
    replies = [m for m in messages if m["role"] == "assistant"]
    if not replies:
        raise _Invalid(field, "no assistant message (nothing to learn)")
    if messages[-1]["role"] != "assistant":
        raise _Invalid(field, "last message must be the assistant's answer (nothing to learn after it)")
    if all(m.get("weight", 1) == 0 for m in replies):
        raise _Invalid(field, "every assistant message has weight 0 (nothing to learn)")


def _named(messages: list[dict[str, Any]], field: str, value: Any) -> list[tuple[str, dict[str, Any]]]:
    """Each message with the field it came from: `field[i]` for a list, `field` for a plain string."""
    if isinstance(value, str):
        return [(field, message) for message in messages]
    return [(f"{field}[{index}]", message) for index, message in enumerate(messages)]


def _check_order(turns: list[tuple[str, dict[str, Any]]]) -> None:
    """Roles in the order chat templates and trainers assume: system messages only first, then the
    user's turn, then user and assistant taking turns; tool results only after the assistant (several
    in a row are one turn's parallel calls). Many templates render any order without complaint, so a
    chat out of order would otherwise train silently on a conversation no one will ever send."""
    for position, (where, message) in enumerate(turns):
        role = message["role"]
        previous = turns[position - 1][1]["role"] if position else None
        if role == previous and role != "tool":
            raise _Invalid(
                f"{where}.role",
                f"two {role} messages in a row ({turns[position - 1][0]} and {where}); merge them, "
                "or add the missing turn between them",
            )
        if role == "system" and position:
            raise _Invalid(f"{where}.role", "system message in the middle of the chat; it must come first")
        if previous in (None, "system") and role not in ("system", "user"):
            raise _Invalid(
                f"{where}.role",
                f"the chat starts with {role!r}; the first turn (after any system) is the user's",
            )
        if role == "tool" and previous not in ("assistant", "tool"):
            raise _Invalid(f"{where}.role", f"a tool result after {previous!r}; it must follow the assistant")


_Parts = tuple[
    str, list[dict[str, Any]], list[dict[str, Any]] | None, list[dict[str, Any]] | None, str | None
]


def _from_messages(data: dict[str, Any]) -> _Parts:
    messages = _messages(data["messages"], "messages", MESSAGES_ROLES)
    _check_order(_named(messages, "messages", data["messages"]))
    _check_learnable(messages, "messages")
    return "chat", messages, None, None, None


def _from_alpaca(data: dict[str, Any]) -> _Parts:
    instruction = _string(data, "instruction")
    output = _string(data, "output", "assistant reply is empty")
    extra, system = _optional_string(data, "input"), _optional_string(data, "system")
    user = instruction + ("\n\n" + extra if extra.strip() else "")
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return "chat", messages, None, None, None


def _from_prompt_completion(data: dict[str, Any]) -> _Parts:
    prompt = _turns(data["prompt"], "prompt", "user")
    completion = _turns(data["completion"], "completion", "assistant")
    _check_order(
        _named(prompt, "prompt", data["prompt"]) + _named(completion, "completion", data["completion"])
    )
    _check_learnable(completion, "completion")
    return "chat", prompt + completion, None, None, None


def _from_preference(data: dict[str, Any]) -> _Parts:
    chosen = _turns(data["chosen"], "chosen", "assistant")
    rejected = _turns(data["rejected"], "rejected", "assistant")
    named_chosen = _named(chosen, "chosen", data["chosen"])
    named_rejected = _named(rejected, "rejected", data["rejected"])
    if _present(data, "prompt"):
        prompt = _turns(data["prompt"], "prompt", "user")
        named_prompt = _named(prompt, "prompt", data["prompt"])
        # Some datasets repeat the prompt at the start of chosen and rejected; keep only the replies.
        if chosen[: len(prompt)] == prompt and rejected[: len(prompt)] == prompt:
            chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
            named_chosen, named_rejected = named_chosen[len(prompt) :], named_rejected[len(prompt) :]
    else:
        prompt, chosen, rejected = _split_shared_prompt(chosen, rejected)
        if not prompt:
            raise _Invalid(
                "prompt",
                "missing, and chosen and rejected share no leading turns to take it from; "
                "add a prompt, or give both as full conversations",
            )
        named_prompt = named_chosen[: len(prompt)]
        named_chosen, named_rejected = named_chosen[len(prompt) :], named_rejected[len(prompt) :]
    _check_order(named_prompt + named_chosen)
    _check_order(named_prompt + named_rejected)
    _check_learnable(chosen, "chosen")
    _check_learnable(rejected, "rejected")
    return "preference", prompt, chosen, rejected, None


def _split_shared_prompt(
    chosen: list[dict[str, Any]], rejected: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Split two full conversations into their shared prompt and diverging replies (TRL's implicit prompt).

    The prompt stops before any trailing assistant turns it shares, so both replies start with the
    assistant's answer even when the two conversations begin their answers the same way.
    """
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared and chosen[shared - 1]["role"] == "assistant":
        shared -= 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _from_openai_dpo(data: dict[str, Any]) -> _Parts:
    given = data["input"]
    if not isinstance(given, dict):
        raise _Invalid("input", f"expected an object with a messages list, got {json_type(given)}")
    prompt = _messages(given.get("messages"), "input.messages")
    chosen = _messages(data["preferred_output"], "preferred_output", ("assistant",))
    rejected = _messages(data["non_preferred_output"], "non_preferred_output", ("assistant",))
    named_prompt = _named(prompt, "input.messages", given["messages"])
    _check_order(named_prompt + _named(chosen, "preferred_output", data["preferred_output"]))
    _check_order(named_prompt + _named(rejected, "non_preferred_output", data["non_preferred_output"]))
    _check_learnable(chosen, "preferred_output")
    _check_learnable(rejected, "non_preferred_output")
    return "preference", prompt, chosen, rejected, None


def _from_text(data: dict[str, Any]) -> _Parts:
    return "text", [], None, None, _string(data, "text")


_NORMALISERS = {
    "openai_dpo": _from_openai_dpo,
    "preference": _from_preference,
    "messages": _from_messages,
    "alpaca": _from_alpaca,
    "prompt_completion": _from_prompt_completion,
    "text": _from_text,
}
