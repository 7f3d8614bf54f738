"""Property-based fuzzing of hone's two readers of what people write: the config loader and the data loader.

Whatever the YAML, the dotted overrides or the bytes of a JSONL file, the outcome is a valid result or a
`HoneError` that says where the problem is (the config file or the override; the data file and its line),
never another exception. Hypothesis draws the inputs from the shapes hone reads (config sections and
fields, chat messages and the other data formats) mixed with arbitrary values, broken YAML and bytes that
are not UTF-8; no example database is kept.

Inputs that once made hone raise another exception are pinned at the end as regression tests, each the
exact reproduction of one bug found here (a non-string `data.dataset`, YAML nested hundreds deep, an
unpaired UTF-16 surrogate escape in data).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hone.config import HoneConfig, dump_config, load_config
from hone.config_text import apply_overrides, parse_override
from hone.data.check import run_data_check
from hone.data.formats import FORMATS
from hone.data.load import load_split
from hone.data.prepare import PrepareOptions, parse_source, prepare_dataset
from hone.errors import HoneError

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text as people and tools write it: any character a UTF-8 file can hold (lone surrogates: the regression
# tests at the end).
CHARACTERS = st.characters(exclude_categories=("Cs",))
TEXT = st.text(CHARACTERS, max_size=24)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | TEXT
    | st.sampled_from(["lora", "qlora", "full", "sft", "dpo", "rl", "auto", "1e-4", "t.jsonl", "", " "])
)


# Config: YAML files and dotted overrides ------------------------------------------------------------


def leaf_paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from leaf_paths(child, (*prefix, key))
    else:
        yield prefix, value


DEFAULTS = dict(leaf_paths(HoneConfig.model_validate({"data": {"train": "t.jsonl"}}).model_dump(mode="json")))
DATASET = ("data", "dataset")  # a non-string here is a bug, pinned below: only strings are drawn for it
KNOWN_PATHS = sorted(DEFAULTS)
SECTIONS = sorted({path[:depth] for path in KNOWN_PATHS for depth in range(1, len(path))})
KEY_NAMES = sorted({part for path in KNOWN_PATHS for part in path} - {"dataset"})
KEYS = st.sampled_from(KEY_NAMES) | st.text(CHARACTERS, max_size=8)
YAML_KEYS = KEYS | st.integers(-3, 3) | st.booleans() | st.none()  # YAML mappings take any scalar key
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(YAML_KEYS, inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(KNOWN_PATHS)
PATHS = (
    st.one_of(FIELDS, FIELDS, FIELDS, FIELDS)  # mostly real fields, so that many configs are valid
    | st.tuples(st.sampled_from(SECTIONS), KEYS).map(lambda pair: (*pair[0], pair[1]))
    | st.lists(KEYS, min_size=1, max_size=3).map(tuple)
)


def plausible(default: Any) -> st.SearchStrategy[Any]:
    """Values of a field's own type, many of them in its range, so that valid configs are drawn often."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(0, 2 * default + 100)
    if isinstance(default, float):
        return st.floats(0, 2 * default + 1)
    if isinstance(default, str):
        return st.just(default) | TEXT
    return st.just(default)


def value_for(path: tuple[str, ...]) -> st.SearchStrategy[Any]:
    if path == DATASET:
        return st.none() | TEXT
    return st.just(DEFAULTS[path]) | plausible(DEFAULTS[path]) | VALUES if path in DEFAULTS else VALUES


def one_in(draw: st.DrawFn, chances: int) -> bool:
    """True once in about `chances` draws: Hypothesis draws its simplest value (0) far more often."""
    return draw(st.integers(1, chances)) == chances


def set_path(raw: dict[Any, Any], path: tuple[str, ...], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


@st.composite
def raw_configs(draw: st.DrawFn) -> dict[Any, Any]:
    raw: dict[Any, Any] = {} if one_in(draw, 5) else {"data": {"train": "train.jsonl"}}
    for _ in range(draw(st.integers(0, 4))):
        path = draw(PATHS)
        set_path(raw, path, draw(value_for(path)))
    return raw


YAML_NOISE = st.text(st.sampled_from("{}[]:,-&*!|>'\"#%@?~ \t\n"), min_size=1, max_size=6) | TEXT


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    """A config dumped as YAML, sometimes cut, spliced with YAML punctuation or given invalid UTF-8."""
    text = yaml.safe_dump(draw(raw_configs()), sort_keys=False, allow_unicode=draw(st.booleans()))
    if one_in(draw, 4):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 10)))
        text = text[:start] + draw(YAML_NOISE) + text[end:]
    data = text.encode("utf-8")
    if one_in(draw, 10):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9", b"\x80\x80"])) + data[at:]
    return data


def override_value(value: Any) -> str:
    """A value as typed after `=`: YAML in flow style, one line."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000)
    return text.removesuffix("\n...\n").removesuffix("\n")


@st.composite
def overrides(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(TEXT)  # KEY=VALUE or not, anything a person could type
    path = draw(PATHS.filter(lambda path: path != DATASET))  # noise after `=` could read as a number
    value = override_value(draw(value_for(path))) if kind > 1 else draw(YAML_NOISE)
    return ".".join(map(str, path)) + "=" + value


def names_override(message: str, given: list[str]) -> bool:
    return message.startswith("override ") and any(repr(text)[:40] in message for text in given)


@settings(FUZZ, max_examples=150)
@given(data=config_files(), given=st.lists(overrides(), max_size=2))
def test_any_config_file_and_overrides_load_or_fail_naming_the_file(
    tmp_path: Path, data: bytes, given: list[str]
) -> None:
    path = tmp_path / "fuzzed.yaml"
    path.write_bytes(data)
    try:
        config = load_config(path, given)
    except HoneError as exc:
        message = str(exc)
        event("refused")
        assert message.startswith(str(path)) or names_override(message, given), message
        assert "Traceback" not in message
        return
    assert isinstance(config, HoneConfig)
    event("valid config")
    resolved = tmp_path / "resolved.yaml"  # what every run folder records, and `hone train --resume` reads
    resolved.write_text(dump_config(config), encoding="utf-8")
    assert load_config(resolved) == config


@settings(FUZZ, max_examples=150)
@given(raw=raw_configs(), given=st.lists(overrides(), min_size=1, max_size=4))
def test_dotted_overrides_set_their_value_or_fail_naming_the_override(
    raw: dict[Any, Any], given: list[str]
) -> None:
    before = yaml.safe_dump(raw, sort_keys=False)
    try:
        result = apply_overrides(raw, given)
    except HoneError as exc:
        event("refused")
        assert names_override(str(exc), given), str(exc)
        return
    finally:
        assert yaml.safe_dump(raw, sort_keys=False) == before, "the raw config is copied, not changed"
    keys, value = parse_override(given[-1])
    node: Any = result
    for key in keys:
        node = node[key]
    assert repr(node) == repr(value), "the last override wins"


# Data: JSONL files through `hone data check` and the training loader ------------------------------

ROLES = st.sampled_from(["system", "user", "assistant", "tool", "bot", "", "User"]) | SCALARS
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
WORDS = st.text(CHARACTERS, min_size=1, max_size=24).filter(str.strip) | st.sampled_from(
    ["hello", "How do I reset my password?", '{"category": "billing"}', "Call me at 555-123-4567"]
)
CONTENT = TEXT | WORDS
MESSAGES = st.fixed_dictionaries(
    {"role": ROLES, "content": CONTENT | JSON_VALUES},
    optional={"weight": st.sampled_from([0, 1, 2, True, 0.5, None, "1"]), "tool_calls": JSON_VALUES},
)


@st.composite
def chats(draw: st.DrawFn, content: st.SearchStrategy[str] = CONTENT) -> list[dict[str, Any]]:
    """A chat in order (system, then user and assistant taking turns)."""
    turns = [{"role": "system", "content": draw(content)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 2))):
        turns += [{"role": "user", "content": draw(content)}, {"role": "assistant", "content": draw(content)}]
    return turns


# One record of each format that hone accepts; a file is mostly one of these, as real files are.
VALID_RECORDS = [
    st.fixed_dictionaries({"messages": chats(WORDS)}),
    st.fixed_dictionaries(
        {"instruction": WORDS, "output": WORDS}, optional={"input": WORDS, "system": WORDS}
    ),
    st.fixed_dictionaries({"prompt": WORDS | chats(WORDS).map(lambda chat: chat[:-1]), "completion": WORDS}),
    st.fixed_dictionaries({"prompt": WORDS, "chosen": WORDS, "rejected": WORDS}),
    st.fixed_dictionaries({"text": WORDS}),
]
MESSAGE_LISTS = chats() | st.lists(MESSAGES | JSON_VALUES, max_size=4)
TURNS = CONTENT | MESSAGE_LISTS | JSON_VALUES
RECORDS = (
    st.fixed_dictionaries({"messages": MESSAGE_LISTS})
    | st.fixed_dictionaries({"prompt": TURNS, "completion": TURNS})
    | st.fixed_dictionaries({"chosen": TURNS, "rejected": TURNS}, optional={"prompt": TURNS})
    | st.fixed_dictionaries({"instruction": CONTENT, "output": CONTENT}, optional={"input": TURNS})
    | st.fixed_dictionaries(
        {"input": st.fixed_dictionaries({"messages": MESSAGE_LISTS}) | JSON_VALUES},
        optional={"preferred_output": MESSAGE_LISTS, "non_preferred_output": MESSAGE_LISTS},
    )
    | st.fixed_dictionaries({"text": CONTENT | JSON_VALUES})
    | st.dictionaries(st.sampled_from(sorted({k for keys in FORMATS.values() for k in keys})) | TEXT, TURNS)
)


@st.composite
def jsonl_lines(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind <= 3:  # a record hone accepts
        return json.dumps(draw(valid), ensure_ascii=draw(st.booleans())).encode("utf-8")
    if kind == 4:  # a record of some format, or close to one
        return json.dumps(draw(RECORDS), ensure_ascii=draw(st.booleans())).encode("utf-8")
    if kind == 5:  # any JSON value
        return json.dumps(draw(JSON_VALUES)).encode("utf-8")
    if kind == 6:  # a record cut short
        text = json.dumps(draw(RECORDS)).encode("utf-8")
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == 7:  # any text, whitespace alone included
        return draw(st.text(CHARACTERS.filter(lambda c: c != "\n"), max_size=20)).encode("utf-8")
    return draw(st.binary(max_size=24)).replace(b"\n", b"")  # bytes, usually not UTF-8


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    """Lines drawn from a small pool, so files hold duplicates (and floods) as real data does."""
    pool = draw(st.lists(jsonl_lines(draw(st.sampled_from(VALID_RECORDS))), min_size=1, max_size=6))
    lines = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=24))
    data = b"\n".join(lines) + (b"\n" if draw(st.booleans()) else b"")
    return (b"\xef\xbb\xbf" if one_in(draw, 10) else b"") + data


def line_kinds(data: bytes) -> tuple[set[int], set[int]]:
    """Non-blank lines, and those that cannot be a record at all (not UTF-8, not JSON, not an object)."""
    filled, broken = set(), set()
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            filled.add(number)
            broken.add(number)
            continue
        if not text.strip():
            continue
        filled.add(number)
        try:
            parsed = json.loads(text)
        except (RecursionError, ValueError):
            parsed = None
        if not isinstance(parsed, dict):
            broken.add(number)
    return filled, broken


def lines_named(messages: list[str], path: Path) -> set[int]:
    pattern = re.compile(rf"{re.escape(str(path))} line (\d+): ")
    return {int(found.group(1)) for message in messages if (found := pattern.match(message))}


DATA_FORMATS = st.just("auto") | st.just("auto") | st.sampled_from(list(FORMATS))  # data.format
SFT = HoneConfig.model_validate({"data": {"train": "t.jsonl"}}).train


@pytest.fixture
def local_tokenizer(monkeypatch: pytest.MonkeyPatch, tokenizer: Any) -> Any:
    """`run_data_check` loads the model's tokenizer on every call; hand it the session's instead."""
    monkeypatch.setattr("hone.models.resolve.load_tokenizer", lambda *args, **kwargs: tokenizer)
    return tokenizer


@settings(FUZZ, max_examples=60)
@given(train_data=jsonl_files(), test_data=jsonl_files(), fmt=DATA_FORMATS)
def test_data_check_reports_every_problem_by_file_and_line(
    tmp_path: Path, local_tokenizer: Any, train_data: bytes, test_data: bytes, fmt: str
) -> None:
    paths = {"train": tmp_path / "train.jsonl", "test": tmp_path / "test.jsonl"}
    paths["train"].write_bytes(train_data)
    paths["test"].write_bytes(test_data)
    model = tmp_path / "model"

    report = run_data_check(paths, model_path=model, max_length=64, train=SFT, fmt=fmt)

    event(f"train examples: {min(report.splits[0].examples, 3)}{'+' * (report.splits[0].examples >= 3)}")
    for split, data in zip(report.splits, (train_data, test_data), strict=True):
        path = paths[split.name]
        for message in split.errors + split.warnings:
            assert message.startswith(f"{path}:") or message.startswith(f"{path} line "), message
        filled, broken = line_kinds(data)
        named = lines_named(split.errors, path)
        assert broken <= named, "every line that is not a JSON object is an error naming it"
        assert split.examples <= len(filled - broken)
        assert split.examples + len(named) >= len(filled), "every line is an example or an error"
    everywhere = (*map(str, paths.values()), str(model))
    for message in report.errors + report.warnings:
        assert message.startswith(everywhere), message


@settings(FUZZ, max_examples=120)
@given(data=jsonl_files(), fmt=DATA_FORMATS)
def test_training_loader_returns_every_line_or_fails_naming_the_first_bad_one(
    tmp_path: Path, data: bytes, fmt: str
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)
    filled, broken = line_kinds(data)
    try:
        examples = load_split(path, fmt=fmt)
    except HoneError as exc:
        event("refused")
        header = re.match(
            rf"(\d+) problem\(s\) in {re.escape(str(path))}:\n  {re.escape(str(path))}", str(exc)
        )
        assert header, str(exc)
        assert len(broken) <= int(header.group(1)) <= len(filled) + 1  # one per line, or "no records"
        if broken:
            assert f"{path} line {min(broken)}: " in str(exc), "the first unreadable line is named"
        return
    assert not broken
    assert [example.line for example in examples] == sorted(filled)


# Bugs the properties above found, reproduced exactly (fixed) -------------------------------------


def test_non_string_dataset_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("data: {train: train.jsonl, dataset: 5}\n")
    with pytest.raises(HoneError, match=re.escape(str(path))):
        load_config(path)


def test_config_nested_a_few_hundred_deep_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    for depth in range(200, 800, 10):  # where the two limits fall depends on the stack already in use
        path.write_text("data: {train: t.jsonl}\nx: " + "[" * depth + "]" * depth + "\n")
        with pytest.raises(HoneError, match=re.escape(str(path))):
            load_config(path)


LONE_SURROGATE = {
    "messages": [{"role": "user", "content": "hi \ud800"}, {"role": "assistant", "content": "ok"}]
}


def surrogate_data(tmp_path: Path) -> Path:
    """Valid JSON (the escape of a lone UTF-16 surrogate) that no UTF-8 writer or tokenizer accepts."""
    chats = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
             for i in range(12)]  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(json.dumps(chat) + "\n" for chat in [LONE_SURROGATE, *chats])
    )  # "\\ud800" in the file
    return path


def test_lone_surrogate_in_data_is_a_check_error(tmp_path: Path, local_tokenizer: Any) -> None:
    path = surrogate_data(tmp_path)
    report = run_data_check({"train": path}, model_path=tmp_path, max_length=64, train=SFT)
    assert f"{path} line 1" in " ".join(report.splits[0].errors)


def test_lone_surrogate_in_data_is_a_prepare_error(tmp_path: Path) -> None:
    path = surrogate_data(tmp_path)
    with pytest.raises(HoneError, match=re.escape(f"{path} line 1")):
        prepare_dataset([parse_source(str(path))], tmp_path / "versions", PrepareOptions())
