"""`hone serve` on 127.0.0.1: a real uvicorn server over the tiny model, real LoRA adapters registered in a
real MLflow SQLite store, real HTTP requests (and the official `openai` client)."""

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

from completed_runs import lora_run
from hone.config import ServeFile
from hone.registry.gate import promote, rollback
from hone.registry.refs import Ref
from hone.registry.store import Registry
from hone.serve import build_server
from hone.serve.app import key_digest

PROMPT = [{"role": "user", "content": "My invoice was charged twice, write to me at jane.doe@example.com"}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(settings: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """A real server on a free 127.0.0.1 port for the block; stopped (gracefully) after it."""
    import uvicorn

    config = ServeFile.model_validate(settings)
    server, app = build_server(config)
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


def call(
    url: str, path: str, body: Any = None, key: str | None = None, raw: bytes | None = None
) -> tuple[int, Any, dict[str, str]]:
    """(status, parsed JSON or text, headers) of one request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            text, status, got = response.read().decode(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        text, status, got = exc.read().decode(), exc.code, dict(exc.headers)
    try:
        return status, json.loads(text), got
    except ValueError:
        return status, text, got


def chat(url: str, model: str, key: str | None = None, **extra: Any) -> tuple[int, Any, dict[str, str]]:
    body = {"model": model, "messages": PROMPT, "max_tokens": 8, "temperature": 0, **extra}
    return call(url, "/v1/chat/completions", body, key)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    """Two LoRA versions of `support` registered over the tiny model; v1 in production."""
    folder = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    registry = Registry(uri)
    for seed, name in ((1, "first"), (2, "second")):
        system = "Reply in JSON." if name == "first" else None
        registry.add(lora_run(folder / "runs", tiny_model_dir, name, seed, system), "support")
    from rich.console import Console

    promote(registry, Ref("support", 1), "production", Console(quiet=True), force=True, reason="test setup")
    return {"folder": folder, "uri": uri, "registry": registry, "base": str(tiny_model_dir)}


def settings(store: dict[str, Any], tmp_path: Path, **serve: Any) -> dict[str, Any]:
    return {
        "model": {"reference": store["base"]},
        "track": {"uri": store["uri"]},
        "serve": {"request_log": f"sqlite:///{tmp_path / 'requests.db'}", "refresh_seconds": 0.2, **serve},
    }


def test_chat_completion_over_base_and_adapters_logged_with_pii_redacted(
    store: dict[str, Any], tmp_path: Path
) -> None:
    with serving(settings(store, tmp_path)) as (url, server):
        status, body, headers = chat(url, "base", user="u1")
        assert status == 200, body
        assert body["object"] == "chat.completion" and body["model"] == store["base"]
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        usage = body["usage"]
        assert (
            usage["completion_tokens"] <= 8
            and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        )
        assert headers["x-hone-model-version"] == store["base"]
        for name, version in (("support/2", "support/2"), ("support@production", "support/1")):
            status, body, headers = chat(url, name)
            assert status == 200 and body["model"] == version and headers["x-hone-model-version"] == version
        models = call(url, "/v1/models")[1]["data"]
        assert {"base", "support/1", "support/2", "support@production"} <= {m["id"] for m in models}
        metrics = call(url, "/metrics")[1]
        assert 'hone_requests_total{status="200",version="support/1"} 1.0' in metrics
        rows = server.log.rows()
    assert [row["version"] for row in rows] == [store["base"], "support/2", "support/1"]
    assert rows[0]["user"] == "u1" and rows[2]["requested"] == "support@production"
    assert "jane.doe@example.com" not in rows[0]["request"] and "[EMAIL]" in rows[0]["request"]
    sent = [json.loads(row["request"]) for row in rows]
    assert sent[0] == [
        {"role": "user", "content": PROMPT[0]["content"].replace("jane.doe@example.com", "[EMAIL]")}
    ]
    assert sent[2][0] == {"role": "system", "content": "Reply in JSON."}, (
        "the prompt support/1 was trained under"
    )
    assert sent[1][0]["role"] == "user", "support/2 was trained without one"
    assert all(row["status"] == 200 and row["completion_tokens"] >= 0 for row in rows)


def test_concurrent_requests_for_different_adapters_are_batched_and_match_one_at_a_time(
    store: dict[str, Any], tmp_path: Path
) -> None:
    models = ["base", "support/1", "support/2"] * 3
    with serving(settings(store, tmp_path, max_batch=16)) as (url, server):
        alone = {
            name: chat(url, name, max_tokens=12)[1]["choices"][0]["message"]["content"] for name in models[:3]
        }
        before = server.engine.batches
        with concurrent.futures.ThreadPoolExecutor(len(models)) as pool:
            answers = list(pool.map(lambda name: chat(url, name, max_tokens=12), models))
        batches = server.engine.batches - before
    assert all(status == 200 for status, _, _ in answers)
    for name, (_, body, headers) in zip(models, answers, strict=True):
        assert headers["x-hone-model-version"] == (store["base"] if name == "base" else name)
        assert body["choices"][0]["message"]["content"] == alone[name], "a mixed batch answers as alone"
    assert batches < len(models), f"{len(models)} requests in {batches} batches"


def test_streaming_sends_the_same_text_in_openai_chunks(store: dict[str, Any], tmp_path: Path) -> None:
    with serving(settings(store, tmp_path)) as (url, _):
        whole = chat(url, "support/2", max_tokens=16)[1]["choices"][0]["message"]["content"]
        body = {"model": "support/2", "messages": PROMPT, "max_tokens": 16, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        status, text, headers = call(url, "/v1/chat/completions", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == whole
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["usage"]["completion_tokens"] > 0 and chunks[-1]["choices"] == []
    assert all(c["model"] == "support/2" and c["object"] == "chat.completion.chunk" for c in chunks)


def test_promote_and_rollback_take_effect_without_a_restart(store: dict[str, Any], tmp_path: Path) -> None:
    from rich.console import Console

    registry: Registry = store["registry"]
    with serving(settings(store, tmp_path, refresh_seconds=0.2)) as (url, _):
        assert chat(url, "support@production")[2]["x-hone-model-version"] == "support/1"
        promote(registry, Ref("support", 2), "production", Console(quiet=True), force=True, reason="test")
        time.sleep(0.3)
        assert chat(url, "support@production")[2]["x-hone-model-version"] == "support/2"
        body = {"model": "support@production", "messages": PROMPT, "max_tokens": 120, "temperature": 1.0,
                "stream": True, "seed": 1}  # fmt: skip
        request = urllib.request.Request(
            url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as streaming:  # in flight on support/2 ...
            first = streaming.readline()
            rollback(registry, "support", "production")  # ... while production goes back to support/1
            time.sleep(0.3)
            answered = [chat(url, "support@production")[2]["x-hone-model-version"] for _ in range(3)]
            rest = streaming.read().decode()
    assert answered == ["support/1"] * 3
    chunks = [json.loads(line.removeprefix("data: ")) for line in (first.decode() + rest).split("\n\n")
              if line.startswith("data: {")]  # fmt: skip
    assert chunks and {chunk["model"] for chunk in chunks} == {"support/2"}, "it finished on its version"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_bad_requests_get_openai_errors_and_never_a_5xx(store: dict[str, Any], tmp_path: Path) -> None:
    with serving(settings(store, tmp_path, max_tokens=32, max_body_bytes=2048)) as (url, _):
        cases = {
            "unknown model": (chat(url, "ghost/1"), 404, "no model named 'ghost'"),
            "unknown alias": (chat(url, "support@nope"), 404, "has no alias 'nope'"),
            "max_tokens": (chat(url, "base", max_tokens=33), 400, "above this server's limit of 32"),
            "n": (chat(url, "base", n=2), 400, "n must be 1"),
            "temperature": (chat(url, "base", temperature=9), 400, "temperature must be a number"),
            "no messages": (call(url, "/v1/chat/completions", {"model": "base"}), 400, "messages must be"),
            "bad role": (
                call(
                    url,
                    "/v1/chat/completions",
                    {"model": "base", "messages": [{"role": "bot", "content": "x"}]},
                ),
                400,
                "messages[0].role",
            ),
            "not json": (call(url, "/v1/chat/completions", raw=b"{oops"), 400, "not valid JSON"),
            "too large": (
                call(url, "/v1/chat/completions", raw=b"{" + b" " * 4096 + b"}"),
                400,
                "limit of 2048",
            ),
            "no model": (call(url, "/v1/completions", {"prompt": "hi"}), 400, "model is required"),
        }
        for name, ((status, body, _), expected, message) in cases.items():
            assert status == expected, (name, body)
            assert message in body["error"]["message"], (name, body)
            assert set(body["error"]) == {"message", "type", "param", "code"}


def test_api_keys_are_required_when_configured_and_never_logged(
    store: dict[str, Any], tmp_path: Path
) -> None:
    key = "hone-test-key-123"
    with serving(settings(store, tmp_path, api_key_sha256=[key_digest(key)])) as (url, server):
        assert chat(url, "base")[0] == 401
        assert chat(url, "base", key="wrong")[0] == 401
        status, body, _ = chat(url, "base", key=key)
        assert status == 200, body
        assert call(url, "/healthz")[0] == 200, "health needs no key"
        rows = server.log.rows()
    assert len(rows) == 1 and key not in json.dumps(rows)


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(store: dict[str, Any], tmp_path: Path) -> None:
    keys = ["key-one", "key-two"]
    limited = settings(store, tmp_path, api_key_sha256=[key_digest(k) for k in keys], requests_per_minute=2)
    with serving(limited) as (url, _):
        first = [chat(url, "base", key="key-one", max_tokens=2) for _ in range(3)]
        other = chat(url, "base", key="key-two", max_tokens=2)
        models = call(url, "/v1/models", key="key-one")
    assert [status for status, _, _ in first] == [200, 200, 429]
    assert first[2][2]["retry-after"] == "30" and "2 requests per minute" in first[2][1]["error"]["message"]
    assert other[0] == 200, "each key has its own budget"
    assert models[0] == 200, "listing models spends none"


def test_a_full_queue_answers_429_with_retry_after(store: dict[str, Any], tmp_path: Path) -> None:
    limited = settings(store, tmp_path, max_queue=1, max_batch=1)
    with serving(limited) as (url, _), concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: chat(url, "base", max_tokens=32), range(12)))
    statuses = sorted(status for status, _, _ in results)
    assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses, statuses
    refused = next(headers for status, _, headers in results if status == 429)
    assert refused["retry-after"] == "1"


def test_the_openai_client_works_against_it(store: dict[str, Any], tmp_path: Path) -> None:
    import openai

    with serving(settings(store, tmp_path)) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="support/1", messages=PROMPT, max_tokens=8, temperature=0
        )
        streamed = client.chat.completions.create(
            model="support/1", messages=PROMPT, max_tokens=8, temperature=0, stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
        listed = [model.id for model in client.models.list()]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="ghost/1", messages=PROMPT, max_tokens=4)
        completion = client.completions.create(model="base", prompt="Hello", max_tokens=4, temperature=0)
    assert reply.model == "support/1" and reply.choices[0].message.content == text
    assert "support@production" in listed
    assert completion.object == "text_completion" and completion.usage.completion_tokens <= 4


def test_routes_split_by_weight_sticky_per_user(store: dict[str, Any], tmp_path: Path) -> None:
    routes = {
        "support": {"support/1": 50, "support/2": 50},
        "canary": {"support@staging": 10, "support/1": 90},
    }
    with serving(settings(store, tmp_path, routes=routes)) as (url, _):
        by_user = {user: {chat(url, "support", user=user)[2]["x-hone-model-version"] for _ in range(2)}
                   for user in ("ann", "bob", "cat", "dan", "eve", "fay")}  # fmt: skip
        fallback = chat(url, "canary", user="ann")
    assert all(len(versions) == 1 for versions in by_user.values()), "sticky per user"
    assert {v for versions in by_user.values() for v in versions} == {"support/1", "support/2"}
    assert fallback[0] == 200 and fallback[2]["x-hone-model-version"] == "support/1", (
        "no staging yet: the rest"
    )


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
        plain = chat(url, "support/1", max_tokens=24)[1]["choices"][0]["message"]["content"]
        replies = [chat(url, name, max_tokens=64, response_format=form)[1] for name in ("base", "support/1")]
        sampled = chat(url, "base", max_tokens=64, temperature=1.0, seed=3, response_format=form)[1]
        anything = chat(url, "base", max_tokens=16, response_format={"type": "json_object"})[1]
        wrong = chat(url, "base", response_format={"type": "xml"})
    for reply in [*replies, sampled]:
        content = reply["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(content), schema)  # every reply parses and follows the schema
        assert reply["choices"][0]["finish_reason"] == "stop"
    assert not plain.lstrip().startswith("{"), "without it the random tiny model writes no JSON"
    assert anything["choices"][0]["message"]["content"].lstrip().startswith("{")
    assert wrong[0] == 400 and "response_format.type" in wrong[1]["error"]["message"]


def test_hone_serve_finishes_requests_in_flight_on_sigterm(store: dict[str, Any], tmp_path: Path) -> None:
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
            os.kill(process.pid, signal.SIGTERM)  # mid-stream
            rest = streaming.read().decode()
        _, error = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert first.startswith(b"data: ") and rest.rstrip().endswith("data: [DONE]"), "the stream ran to its end"
    # uvicorn re-raises the signal once it has shut down, so the process ends as SIGTERM's would
    assert process.returncode in (0, -signal.SIGTERM) and "Traceback" not in error, error
    with pytest.raises(OSError):
        call(url, "/healthz")  # and it stopped listening


def test_hone_serve_refuses_to_listen_beyond_loopback_without_keys(
    store: dict[str, Any], tmp_path: Path
) -> None:
    from hone.errors import HoneError

    with pytest.raises(HoneError, match=r"serve\.host: 0\.0\.0\.0 is reachable from other machines"):
        build_server(ServeFile.model_validate(settings(store, tmp_path, host="0.0.0.0")))


def test_a_canary_splits_by_weight_within_tolerance(store: dict[str, Any], tmp_path: Path) -> None:
    from hone.serve.models import Resolver

    routes = {"support": {"support/1": 80, "support/2": 20}}
    resolver = Resolver(ServeFile.model_validate(settings(store, tmp_path, routes=routes)), store["registry"])
    picked = [resolver.resolve("support", f"user-{n}").label for n in range(400)]
    share = picked.count("support/2") / len(picked)
    assert 0.14 <= share <= 0.26, share  # 20% +- 3 standard deviations of 400 draws
    again = [resolver.resolve("support", f"user-{n}").label for n in range(400)]
    assert again == picked, "the same users get the same versions"


def answered_by(results: list[tuple[int, str]], version: str, after: int = 0, timeout: float = 120) -> None:
    """Wait until a request after the first `after` has been answered by `version`."""
    deadline = time.monotonic() + timeout
    while not any(answer == version for _, answer in results[after:]):
        assert time.monotonic() < deadline, f"no answer from {version} within {timeout} s"
        time.sleep(0.05)


def test_promote_and_rollback_under_concurrent_load_fail_no_request(
    store: dict[str, Any], tmp_path: Path
) -> None:
    from rich.console import Console

    registry: Registry = store["registry"]
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status, body, headers = chat(url, "support@production", max_tokens=4)
            results.append((status, headers.get("x-hone-model-version", str(body))))

    with serving(settings(store, tmp_path, refresh_seconds=0.1)) as (url, _):
        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        answered_by(results, "support/1")
        console = Console(quiet=True)
        promote(registry, Ref("support", 2), "production", console, force=True, reason="load test")
        answered_by(results, "support/2")
        rollback(registry, "support", "production", reason="load test")
        answered_by(results, "support/1", after=len(results))
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert results and all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    versions = [version for _, version in results]
    assert versions[0] == "support/1" and versions[-1] == "support/1" and "support/2" in versions


def test_feedback_is_checked_stored_redacted_and_counted(store: dict[str, Any], tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    team = {"type": "object", "properties": {"team": {"enum": ["billing", "bug"]}}, "required": ["team"],
            "additionalProperties": False}  # fmt: skip
    schema.write_text(json.dumps(team))
    config = {**settings(store, tmp_path), "monitor": {"json_schema": str(schema)}}
    form = {"type": "json_schema", "json_schema": {"name": "t", "schema": team}}
    with serving(config) as (url, server):
        answered = chat(url, "support/2", user="u7")[1]["id"]
        as_json = chat(url, "support/1", max_tokens=32, response_format=form)[1]["id"]
        good = {"id": answered, "rating": "down", "correction": '{"team": "billing"} mail a@b.io',
                "comment": "wrong team"}  # fmt: skip
        status, body, _ = call(url, "/v1/feedback", good)
        assert status == 200 and body["object"] == "feedback" and body["id"].startswith("fb-")
        assert call(url, "/v1/feedback", {"id": as_json, "rating": 5})[0] == 200
        assert call(url, "/v1/feedback", {"id": "chatcmpl-nope", "rating": "up"})[0] == 404
        for bad, param in (
            ({"rating": "up"}, "id"),
            ({"id": answered, "rating": 6}, "rating"),
            ({"id": answered, "rating": "meh"}, "rating"),
            ({"id": answered, "rating": True}, "rating"),
            ({"id": answered, "rating": 3, "correction": ["x"]}, "correction"),
        ):
            status, body, _ = call(url, "/v1/feedback", bad)
            assert status == 400 and body["error"]["param"] == param, (bad, body)
        metrics = call(url, "/metrics")[1]
        rows = server.log.feedback()
    assert [(row["version"], row["rating"], row["score"]) for row in rows] == [
        ("support/2", "down", 0.0),
        ("support/1", "5", 1.0),
    ]
    assert rows[0]["correction"] == '{"team": "billing"} mail [EMAIL]' and rows[0]["comment"] == "wrong team"
    assert 'hone_feedback_total{rating="down",version="support/2"} 1.0' in metrics
    assert 'hone_online_checks_total{check="schema_valid",result="pass",version="support/1"} 1.0' in metrics
    assert 'hone_online_checks_total{check="json_valid",result="fail",version="support/2"}' in metrics
