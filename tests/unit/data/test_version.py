from __future__ import annotations

from hone.data.formats import Example
from hone.data.version import dataset_hash


def chat(reply: str, line: int = 1, source: str = "a.jsonl") -> Example:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": reply}]
    return Example("chat", messages, None, None, None, source, line)


def test_dataset_hash_depends_on_content_only() -> None:
    assert dataset_hash({"train": [chat("hello")]}) == dataset_hash({"train": [chat("hello", 7, "b.jsonl")]})
    assert dataset_hash({"train": [chat("hello")]}) != dataset_hash({"train": [chat("hello!")]})
    assert dataset_hash({"train": [chat("hello")]}) != dataset_hash({"test": [chat("hello")]})
    assert dataset_hash({"a": [chat("x")], "b": [chat("y")]}) == dataset_hash(
        {"b": [chat("y")], "a": [chat("x")]}
    )
    assert len(dataset_hash({"train": [chat("hello")]})) == 64
