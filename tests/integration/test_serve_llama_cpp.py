"""`hone serve` with `serve.engine: llama.cpp` (the llama-cpp extra) on 127.0.0.1: the tiny model and two
LoRA versions registered over it, served from F16 GGUF files that hone makes, caches and reuses, answering
real HTTP requests."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp")

from completed_runs import lora_run
from hone.config import ServeFile
from hone.registry.store import Registry
from hone.serve import build_server

PROMPT = [{"role": "user", "content": "My invoice was charged twice this month"}]
MODELS = ("base", "support/1", "support/2")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(settings: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """A real server on a free 127.0.0.1 port for the block (its GGUF of the base made or found first)."""
    import uvicorn

    server, app = build_server(ServeFile.model_validate(settings))
    port = free_port()
    http = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if call(url, "/readyz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    try:
        yield url, server
    finally:
        http.should_exit = True
        thread.join(timeout=60)


def call(url: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            text, status, headers = response.read().decode(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        text, status, headers = exc.read().decode(), exc.code, dict(exc.headers)
    try:
        return status, json.loads(text), headers
    except ValueError:
        return status, text, headers


def chat(url: str, model: str, **extra: Any) -> tuple[int, Any, dict[str, str]]:
    body = {"model": model, "messages": PROMPT, "max_tokens": 12, "temperature": 0, **extra}
    return call(url, "/v1/chat/completions", body)


def content(reply: tuple[int, Any, dict[str, str]]) -> str:
    status, body, _ = reply
    assert status == 200, body
    return str(body["choices"][0]["message"]["content"])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    """Two LoRA versions of `support` over the tiny model (support/1 trained under a system prompt)."""
    folder = tmp_path_factory.mktemp("serve-llama-cpp")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    registry = Registry(uri)
    registry.add(lora_run(folder / "runs", tiny_model_dir, "first", 1, "Reply in JSON."), "support")
    registry.add(lora_run(folder / "runs", tiny_model_dir, "second", 2), "support")
    return {"uri": uri, "base": str(tiny_model_dir)}


def settings(
    store: dict[str, Any], tmp_path: Path, engine: str = "llama.cpp", **serve: Any
) -> dict[str, Any]:
    return {
        "model": {"reference": store["base"]},
        "track": {"uri": store["uri"]},
        "serve": {"engine": engine, "llama_cpp": {"quant": "F16"},
                  "request_log": f"sqlite:///{tmp_path / 'requests.db'}", **serve},
    }  # fmt: skip


def test_greedy_answers_at_f16_are_the_transformers_engines(store: dict[str, Any], tmp_path: Path) -> None:
    """F16 keeps the tiny model's greedy choices: each model answers as the transformers engine makes it
    answer. Sampled with one seed, each answers otherwise (the adapters were merged), and the same again."""
    with serving(settings(store, tmp_path)) as (url, _):
        replies = {name: chat(url, name) for name in MODELS}
        sampled = [content(chat(url, name, temperature=1.0, seed=7)) for name in (*MODELS, "base")]
    with serving(settings(store, tmp_path, engine="transformers")) as (url, _):
        expected = {name: chat(url, name) for name in MODELS}
    for name in MODELS:
        assert content(replies[name]) == content(expected[name]), name
        assert replies[name][1]["usage"] == expected[name][1]["usage"], "the same prompt ids, the same count"
        assert replies[name][2]["x-hone-model-version"] == expected[name][2]["x-hone-model-version"]
    assert len(set(sampled[:3])) == 3 and sampled[3] == sampled[0], sampled


def test_the_gguf_reads_the_chat_prompt_as_the_tokenizers_ids(store: dict[str, Any], tmp_path: Path) -> None:
    """The engine sends the tokenizer's ids; llama.cpp's own tokenizer agrees with them on a chat prompt."""
    with serving(settings(store, tmp_path)) as (_, server):
        engine = server.engine
        text = engine.tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
        ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert engine.base.tokenize(text.encode(), add_bos=False, special=True) == ids


def test_streaming_sends_the_same_text_in_openai_chunks(store: dict[str, Any], tmp_path: Path) -> None:
    with serving(settings(store, tmp_path)) as (url, _):
        whole = content(chat(url, "support/2", max_tokens=16))
        body = {"model": "support/2", "messages": PROMPT, "max_tokens": 16, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        status, text, headers = call(url, "/v1/chat/completions", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(pieces) == whole and len([piece for piece in pieces if piece]) > 1
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["usage"]["completion_tokens"] > 0 and chunks[-1]["choices"] == []


def test_response_format_json_schema_is_enforced_while_decoding(
    store: dict[str, Any], tmp_path: Path
) -> None:
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"category": {"enum": ["billing", "bug", "account"]}, "urgent": {"type": "boolean"}},
        "required": ["category", "urgent"],
        "additionalProperties": False,
    }
    form = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema}}
    with serving(settings(store, tmp_path)) as (url, _):
        plain = content(chat(url, "support/1", max_tokens=24))
        replies = [chat(url, name, max_tokens=64, response_format=form) for name in ("base", "support/1")]
        sampled = chat(url, "base", max_tokens=64, temperature=1.0, seed=3, response_format=form)
        anything = chat(url, "base", max_tokens=48, response_format={"type": "json_object"})
    for reply in [*replies, sampled]:
        jsonschema.validate(json.loads(content(reply)), schema)  # every reply parses and follows the schema
        assert reply[1]["choices"][0]["finish_reason"] == "stop"
    assert not plain.lstrip().startswith("{"), "without it the random tiny model writes no JSON"
    assert content(anything).lstrip().startswith("{")


def test_a_stop_string_ends_the_reply_before_it(store: dict[str, Any], tmp_path: Path) -> None:
    with serving(settings(store, tmp_path)) as (url, _):
        whole = content(chat(url, "support/1", max_tokens=24))
        stop = whole[len(whole) // 2 : len(whole) // 2 + 2]
        status, body, _ = chat(url, "support/1", max_tokens=24, stop=[stop])
    assert stop.strip() and status == 200
    assert body["choices"][0]["message"]["content"] == whole[: whole.find(stop)]
    assert body["choices"][0]["finish_reason"] == "stop"


def test_gguf_files_are_made_once_and_reused_by_the_next_server(
    store: dict[str, Any], tmp_path: Path
) -> None:
    """With one adapter kept loaded, support/1 is dropped for support/2 and loaded again from its file (the
    earlier tests may have made the files already); a second server converts nothing."""
    from hone.models.resolve import hone_home

    with serving(settings(store, tmp_path, max_adapters=1)) as (url, server):
        first = [content(chat(url, name)) for name in ("support/1", "support/2", "support/1")]
        made = list(server.engine.made)
        loaded = list(server.engine.adapters)
    files = {file: file.stat().st_mtime_ns for file in (hone_home() / "serve" / "gguf").glob("*/model.gguf")}
    with serving(settings(store, tmp_path)) as (url, server):
        again = [content(chat(url, name)) for name in ("support/1", "support/2", "support/1")]
        assert server.engine.made == []
        used = [
            Path(server.engine.base.model_path),
            *(Path(m.model_path) for m in server.engine.adapters.values()),
        ]
    assert len(made) == len(set(made)) and loaded == ["support/1"]
    assert (
        len(set(used)) == 3
        and set(used) <= set(files)
        and {file: file.stat().st_mtime_ns for file in files} == files
    )
    assert again == first and first[0] == first[2]


def test_a_full_queue_answers_429_with_retry_after(store: dict[str, Any], tmp_path: Path) -> None:
    limited = settings(store, tmp_path, max_queue=1)
    with serving(limited) as (url, _), concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: chat(url, "base", max_tokens=400), range(12)))
    statuses = sorted(status for status, _, _ in results)
    assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses, statuses
    refused = next(headers for status, _, headers in results if status == 429)
    assert refused["retry-after"] == "1"


def test_hone_serve_finishes_the_stream_in_flight_on_sigterm_and_exits_cleanly(
    store: dict[str, Any], tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    import yaml

    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(settings(store, tmp_path, port=port)))
    command = [sys.executable, "-c", "from hone.cli import main; main()", "serve", "-c", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if call(url, "/readyz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        body = {"model": "support/1", "messages": PROMPT, "max_tokens": 200, "temperature": 1.0, "seed": 2,
                "stream": True}  # fmt: skip
        request = urllib.request.Request(
            url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as streaming:
            first = streaming.readline()
            os.kill(process.pid, signal.SIGTERM)
            rest = streaming.read().decode()
        _, error = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert first.startswith(b"data: ") and rest.rstrip().endswith("data: [DONE]"), "the stream ran to its end"
    assert process.returncode in (0, -signal.SIGTERM) and "Traceback" not in error, error
