"""Property-based fuzzing of `hone serve`'s request parser: whatever JSON a client sends as a chat or
completion request, the parser returns checked settings and messages or raises the API's 400 naming the
field, never another exception (which the server would turn into a 500)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hone.config import ServeConfig
from hone.serve.app import ApiError, chat_messages, limits

FUZZ = settings(deadline=None, database=None, max_examples=400, derandomize=True)
SERVE = ServeConfig(max_tokens=64)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
ROLES = st.sampled_from(["system", "user", "assistant", "developer", "tool", "bot", ""]) | JSON
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": JSON})
CONTENT = st.text(max_size=20) | st.lists(PART, max_size=2) | JSON
MESSAGE = st.fixed_dictionaries({"role": ROLES, "content": CONTENT}) | JSON
FIELDS = {
    "messages": st.lists(MESSAGE, max_size=4) | JSON,
    "max_tokens": st.integers(-5, 100) | JSON,
    "max_completion_tokens": st.integers(-5, 100) | JSON,
    "temperature": st.floats(-1, 3) | JSON,
    "top_p": st.floats(-1, 2) | JSON,
    "n": st.integers(0, 3) | JSON,
    "stop": st.lists(st.text(max_size=4), max_size=6) | st.text(max_size=4) | JSON,
    "seed": st.integers() | JSON,
}
BODIES = st.fixed_dictionaries({}, optional=FIELDS)


@FUZZ
@given(BODIES)
def test_settings_are_checked_or_a_400_names_the_field(body: dict[str, Any]) -> None:
    try:
        checked = limits(SERVE, body)
    except ApiError as error:
        assert error.status == 400 and error.param in FIELDS and error.param in error.message
        return
    assert 1 <= checked["max_tokens"] <= SERVE.max_tokens
    assert 0.0 <= checked["temperature"] <= 2.0 and 0.0 <= checked["top_p"] <= 1.0
    assert all(isinstance(stop, str) and stop for stop in checked["stop"]) and len(checked["stop"]) <= 4
    assert checked["seed"] is None or isinstance(checked["seed"], int)


@FUZZ
@given(BODIES)
def test_messages_are_plain_chat_turns_or_a_400(body: dict[str, Any]) -> None:
    try:
        messages = chat_messages(body)
    except ApiError as error:
        assert error.status == 400 and error.param == "messages"
        return
    assert messages and all(set(m) == {"role", "content"} for m in messages)
    assert all(
        m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str) for m in messages
    )
