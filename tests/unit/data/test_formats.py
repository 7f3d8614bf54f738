from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hone.data.formats import Example, detect_format, load_examples, normalise
from hone.data.sources import RawRecord, read_all, read_records
from hone.errors import HoneError

BAD = Path(__file__).resolve().parents[2] / "assets" / "bad_data"


def rec(data: dict[str, Any], line: int = 1) -> RawRecord:
    return RawRecord(data=data, source="d.jsonl", line=line)


def msg(role: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


def chat(*messages: dict[str, Any], line: int = 1) -> Example:
    return Example("chat", list(messages), None, None, None, "d.jsonl", line)


def problem(data: dict[str, Any], fmt: str | None = None) -> str:
    with pytest.raises(HoneError) as caught:
        normalise(rec(data), fmt)
    return str(caught.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"messages": [], "text": "x"}, "messages"),
        ({"instruction": "a", "input": "b", "output": "c"}, "alpaca"),
        ({"prompt": "a", "completion": "b"}, "prompt_completion"),
        ({"prompt": "a", "chosen": "b", "rejected": "c"}, "preference"),
        ({"chosen": [], "rejected": []}, "preference"),
        ({"input": {}, "preferred_output": [], "non_preferred_output": []}, "openai_dpo"),
        ({"text": "a", "meta": 1}, "text"),
        ({"instruction": "a", "output": None, "text": "t"}, "text"),
        ({"question": "a", "answer": "b"}, None),
    ],
)
def test_detect_format(data: dict[str, Any], expected: str | None) -> None:
    assert detect_format(data) == expected


def test_messages_format_keeps_weight_and_tool_turns_and_ignores_tools() -> None:
    data = {
        "messages": [
            msg("user", "Weather?", name="ann"),
            msg("assistant", "Checking.", weight=0),
            msg("tool", "sunny"),
            msg("assistant", "Sunny.", weight=1),
        ],
        "tools": [{"type": "function"}],
    }
    assert normalise(rec(data)) == chat(
        msg("user", "Weather?"),
        msg("assistant", "Checking.", weight=0),
        msg("tool", "sunny"),
        msg("assistant", "Sunny.", weight=1),
    )


def test_alpaca_with_and_without_input() -> None:
    with_input = {"instruction": "Translate.", "input": "bonjour", "output": "hello", "system": "Be exact."}
    assert normalise(rec(with_input)) == chat(
        msg("system", "Be exact."), msg("user", "Translate.\n\nbonjour"), msg("assistant", "hello")
    )
    without = {"instruction": "Say hi.", "input": "", "output": "hi"}
    assert normalise(rec(without)) == chat(msg("user", "Say hi."), msg("assistant", "hi"))


def test_prompt_completion_strings_and_conversational() -> None:
    assert normalise(rec({"prompt": "2+2?", "completion": "4"})) == chat(
        msg("user", "2+2?"), msg("assistant", "4")
    )
    conversational = {
        "prompt": [msg("system", "Terse."), msg("user", "2+2?")],
        "completion": [msg("assistant", "4")],
    }
    assert normalise(rec(conversational)) == chat(
        msg("system", "Terse."), msg("user", "2+2?"), msg("assistant", "4")
    )


def paris_pair(line: int) -> Example:
    """The preference example that both the TRL and the OpenAI DPO spellings below normalise to."""
    question, chosen, rejected = (
        msg("user", "Capital of France?"),
        msg("assistant", "Paris."),
        msg("assistant", "Lyon."),
    )
    return Example("preference", [question], [chosen], [rejected], None, "d.jsonl", line)


def test_preference_with_explicit_prompt() -> None:
    example = normalise(rec({"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}))
    assert example == paris_pair(line=1)


def test_preference_full_conversations_share_their_prompt() -> None:
    prefix = [msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Capital of France?")]
    data = {"chosen": [*prefix, msg("assistant", "Paris.")], "rejected": [*prefix, msg("assistant", "Lyon.")]}
    example = normalise(rec(data))
    assert (example.kind, example.messages) == ("preference", prefix)
    assert example.chosen == [msg("assistant", "Paris.")]
    assert example.rejected == [msg("assistant", "Lyon.")]
    # A prompt repeated at the start of chosen and rejected is removed from both.
    repeated = normalise(rec({"prompt": prefix, **data}))
    assert (repeated.messages, repeated.chosen) == (prefix, [msg("assistant", "Paris.")])


def test_preference_without_any_shared_prompt() -> None:
    assert problem({"chosen": "Paris.", "rejected": "Lyon."}) == (
        "d.jsonl line 1: prompt: missing, and chosen and rejected share no leading turns to take it from; "
        "add a prompt, or give both as full conversations"
    )


def test_openai_dpo() -> None:
    data = {
        "input": {"messages": [msg("user", "Capital of France?")], "tools": []},
        "preferred_output": [msg("assistant", "Paris.")],
        "non_preferred_output": [msg("assistant", "Lyon.")],
    }
    assert normalise(rec(data, line=4)) == paris_pair(line=4)
    data["preferred_output"] = [msg("user", "Paris.")]
    assert problem(data) == "d.jsonl line 1: preferred_output[0].role: role 'user'; expected assistant"
    data["input"] = [msg("user", "x")]
    assert problem(data) == "d.jsonl line 1: input: expected an object with a messages list, got list"


def test_text() -> None:
    assert normalise(rec({"text": "A document."})) == Example(
        "text", [], None, None, "A document.", "d.jsonl", 1
    )
    assert problem({"text": "  "}) == "d.jsonl line 1: text: is empty"


def test_system_prompt_injected_only_when_missing() -> None:
    plain = rec({"prompt": "2+2?", "completion": "4"})
    assert normalise(plain, system_prompt="Be brief.").messages[0] == msg("system", "Be brief.")
    own = rec({"messages": [msg("system", "Own."), msg("user", "q"), msg("assistant", "a")]})
    assert normalise(own, system_prompt="Be brief.").messages[0] == msg("system", "Own.")
    pair = normalise(rec({"prompt": "q", "chosen": "a", "rejected": "b"}), system_prompt="Be brief.")
    assert pair.messages == [msg("system", "Be brief."), msg("user", "q")]
    assert pair.chosen == [msg("assistant", "a")]
    assert normalise(rec({"text": "doc"}), system_prompt="Be brief.").messages == []


@pytest.mark.parametrize(
    ("data", "fmt", "expected"),
    [
        ({"instruction": "x"}, "alpaca", "output: missing (the alpaca format needs instruction, output)"),
        ({"instruction": "x", "output": 4}, None, "output: expected a string, got number"),
        (
            {"prompt": [msg("tool", "x")], "completion": "y"},
            None,
            "prompt[0].role: role 'tool'; expected one of",
        ),
        (
            {"messages": [msg("user", "q"), msg("assistant", "a", weight=0)]},
            None,
            "messages: every assistant",
        ),
        ({"messages": [msg("user", "q", weight=1), msg("assistant", "a")]}, None, "messages[0].weight: only"),
        (
            {"messages": [msg("user", "q"), msg("assistant", "a", weight=2)]},
            None,
            "messages[1].weight: expected 0 or 1, got 2",
        ),
        (
            {"messages": [msg("user", "q"), {"role": "assistant", "content": None, "tool_calls": [{}]}]},
            None,
            "messages[1].content: expected a string, got null; assistant tool calls are not supported",
        ),
        (
            {"messages": "hi"},
            None,
            "messages: expected a non-empty list of {role, content} objects, got string",
        ),
        (
            {"question": "q", "answer": "a"},
            None,
            "unrecognised record with keys answer, question; expected one",
        ),
    ],
)
def test_field_problems(data: dict[str, Any], fmt: str | None, expected: str) -> None:
    assert problem(data, fmt).startswith("d.jsonl line 1: " + expected)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"prompt": "q", "completion": [msg("assistant", "a"), msg("assistant", "b")]},
            "completion[1].role: two assistant messages in a row (completion[0] and completion[1])",
        ),
        (
            {"prompt": [msg("user", "q"), msg("system", "s")], "completion": "a"},
            "prompt[1].role: system message in the middle of the chat",
        ),
        (
            {"prompt": [msg("user", "q"), msg("user", "r")], "chosen": "a", "rejected": "b"},
            "prompt[1].role: two user messages in a row (prompt[0] and prompt[1])",
        ),
        (
            {
                "chosen": [msg("assistant", "hi"), msg("user", "q"), msg("assistant", "a")],
                "rejected": [msg("assistant", "hi"), msg("user", "q"), msg("assistant", "b")],
            },
            "chosen[0].role: the chat starts with 'assistant'",
        ),
        (
            {
                "chosen": [msg("user", "q"), msg("assistant", "a"), msg("assistant", "c")],
                "rejected": [msg("user", "q"), msg("assistant", "b")],
            },
            "chosen[2].role: two assistant messages in a row (chosen[1] and chosen[2])",
        ),
        (
            {
                "input": {"messages": [msg("assistant", "hi"), msg("user", "q")]},
                "preferred_output": [msg("assistant", "a")],
                "non_preferred_output": [msg("assistant", "b")],
            },
            "input.messages[0].role: the chat starts with 'assistant'",
        ),
        (
            {
                "input": {"messages": [msg("user", "q")]},
                "preferred_output": [msg("assistant", "a")],
                "non_preferred_output": [msg("assistant", "b"), msg("assistant", "c")],
            },
            "non_preferred_output[1].role: two assistant messages in a row",
        ),
    ],
)
def test_turns_out_of_order_in_every_chat_format(data: dict[str, Any], expected: str) -> None:
    assert problem(data).startswith("d.jsonl line 1: " + expected)


def test_long_or_deep_values_are_quoted_short_in_errors() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    for role in ("x" * 100_000, deep):
        message = problem({"messages": [{"role": role, "content": "hi"}, msg("assistant", "a")]})
        assert message.startswith("d.jsonl line 1: messages[0].role: role ")
        assert len(message) < 400


def test_unknown_format_name() -> None:
    with pytest.raises(HoneError, match="unknown data format 'sharegpt'; expected auto or one of openai_dpo"):
        load_examples([rec({"text": "x"})], fmt="sharegpt")


def test_auto_format_comes_from_the_first_recognised_record_of_each_file() -> None:
    records = [
        rec({"q": "?"}, line=1),
        rec({"instruction": "a", "output": "b"}, line=2),
        rec({"instruction": "a"}, line=3),
        rec({"text": "t"}, line=4),
        RawRecord({"text": "other file"}, "e.jsonl", 1),
    ]
    examples, errors = load_examples(records)
    assert [(e.source, e.line) for e in examples] == [("d.jsonl", 2), ("e.jsonl", 1)]
    assert errors[0].startswith("d.jsonl line 1: unrecognised record with keys q;")
    assert errors[1:] == [
        "d.jsonl line 3: output: missing (the alpaca format needs instruction, output)",
        "d.jsonl line 4: mixed formats: this line is text but the file is alpaca (from line 2)",
    ]


def test_parquet_nulls_count_as_absent(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "messages": [
                msg("user", "q"),
                msg("assistant", "a", weight=0),
                msg("user", "r"),
                msg("assistant", "b"),
            ]
        },
        {"messages": [msg("user", "q"), msg("assistant", "a", weight=1)]},
    ]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    examples, errors = load_examples(read_records(path))
    assert errors == []
    assert examples[0].messages[1:] == [
        msg("assistant", "a", weight=0),
        msg("user", "r"),
        msg("assistant", "b"),
    ]
    assert examples[1].messages[1] == msg("assistant", "a", weight=1)


CORPUS = {
    "bom.jsonl": [],
    "malformed.jsonl": ["line 3: malformed JSON: Expecting ',' delimiter (column 49)"],
    "truncated_last_line.jsonl": [
        "line 2: truncated last line: no newline at the end and the JSON is incomplete "
        "(Expecting ':' delimiter at column 41); was the file cut off while being written?"
    ],
    "not_utf8.jsonl": ["line 2: not UTF-8: byte 0xe9 at byte offset 147 of the file"],
    "not_object.jsonl": [
        "line 2: expected a JSON object, got list",
        "line 3: expected a JSON object, got string",
    ],
    "mixed_formats.jsonl": [
        "line 2: mixed formats: this line is alpaca but the file is messages (from line 1)"
    ],
    "unknown_role.jsonl": [
        "line 2: messages[0].role: role 'human'; expected one of system, user, assistant, tool"
    ],
    "empty_assistant.jsonl": ["line 1: messages[1].content: assistant message is empty"],
    "no_assistant.jsonl": ["line 1: messages: no assistant message (nothing to learn)"],
    "last_turn_user.jsonl": [
        "line 1: messages: last message must be the assistant's answer (nothing to learn after it)"
    ],
    "assistant_first.jsonl": [
        "line 2: messages[0].role: the chat starts with 'assistant'; the first turn (after any system) is "
        "the user's"
    ],
    "consecutive_roles.jsonl": [
        "line 2: messages[2].role: two assistant messages in a row (messages[1] and messages[2]); merge "
        "them, or add the missing turn between them",
        "line 3: messages[1].role: two user messages in a row (messages[0] and messages[1]); merge them, "
        "or add the missing turn between them",
    ],
    "system_mid_chat.jsonl": [
        "line 2: messages[1].role: system message in the middle of the chat; it must come first"
    ],
    "preference_bad_types.jsonl": [
        "line 2: chosen: expected a string or a list of messages, got number",
        "line 3: rejected: expected a string or a list of messages, got object",
        "line 4: prompt[0]: expected an object, got string",
    ],
    "bad.csv": [
        f"line {n}: output: missing; the keys (input, instruction, response) look like the alpaca format, "
        "which needs instruction, output"
        for n in (2, 3)
    ],
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_data_corpus(name: str) -> None:
    path = BAD / name
    records, read_errors = read_all(path)
    examples, format_errors = load_examples(records)
    assert read_errors + format_errors == [f"{path} {expected}" for expected in CORPUS[name]]
    if name == "bom.jsonl":
        assert [e.messages[0]["content"] for e in examples] == ["What is 2 + 2?"] * 2


def test_corpus_covers_every_file() -> None:
    assert {path.name for path in BAD.iterdir()} == set(CORPUS)
