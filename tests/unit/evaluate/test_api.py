"""The API rung against a real HTTP server on 127.0.0.1 that answers like OpenAI's chat completions: the
request it sends, what it reads back, the errors it reports and the tokens its cost is computed from."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rich.console import Console

from hone.config import ApiRung, EvaluateConfig
from hone.errors import HoneError
from hone.evaluate import api
from hone.evaluate.api import answer_with_api, chat_completion
from hone.evaluate.cost import latency
from hone.evaluate.ladder import Rung, cost_record

CHAT = [
    {"role": "system", "content": "Reply in JSON."},
    {"role": "user", "content": "My invoice was charged twice."},
]


@dataclass
class Reply:
    """What the server answers to one request: a status, a body and whether to hold the answer back."""

    status: int = 200
    body: bytes = b""
    hold: bool = False


def completion(content: str | None, prompt_tokens: int = 12, completion_tokens: int = 5) -> Reply:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "tiny",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Reply(body=json.dumps(body).encode())


@dataclass
class ChatServer:
    """A chat-completions endpoint that answers from a script of replies and records every request."""

    url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rung(self, **options: Any) -> ApiRung:
        return ApiRung(name="hosted", base_url=self.url, model="tiny", **options)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without the real waits between them (the server's Retry-After is still read)."""
    monkeypatch.setattr(api, "BACKOFF_SECONDS", 0.0)
    monkeypatch.setattr(api, "MAX_WAIT_SECONDS", 0.2)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    state = ChatServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            with state.lock:
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                state.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                )
                reply = state.replies.pop(0) if state.replies else Reply(404, b"no reply scripted")
            if reply.hold:
                state.release.wait(timeout=30)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:  # the client gave up waiting
                pass
            with state.lock:
                state.in_flight -= 1

        def log_message(self, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    thread = threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{http.server_port}/v1"
    yield state
    state.release.set()
    http.shutdown()
    http.server_close()
    thread.join(timeout=10)


def test_the_request_is_an_openai_chat_completion(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTED_KEY", "sk-test-123")
    server.replies.append(completion('{"category": "billing"}'))

    reply = chat_completion(server.rung(api_key_env="HOSTED_KEY"), CHAT, 32)

    assert reply["choices"][0]["message"]["content"] == '{"category": "billing"}'
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"] == {"model": "tiny", "messages": CHAT, "max_tokens": 32, "temperature": 0}
    assert request["headers"]["Authorization"] == "Bearer sk-test-123"
    assert request["headers"]["Content-Type"] == "application/json"


def test_a_trailing_slash_and_no_key(server: ChatServer) -> None:
    server.replies.append(completion("ok"))
    rung = ApiRung(name="hosted", base_url=server.url + "/", model="other-model")

    chat_completion(rung, CHAT, 8)

    [request] = server.requests
    assert request["path"] == "/v1/chat/completions", "no double slash"
    assert request["body"]["model"] == "other-model"
    assert "Authorization" not in request["headers"]


def test_a_missing_key_stops_before_any_request(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOSTED_KEY", raising=False)
    with pytest.raises(HoneError, match=r"evaluate\.api hosted: environment variable HOSTED_KEY is not set"):
        chat_completion(server.rung(api_key_env="HOSTED_KEY"), CHAT, 8)
    monkeypatch.setenv("HOSTED_KEY", "")
    with pytest.raises(HoneError, match="HOSTED_KEY is not set"):
        chat_completion(server.rung(api_key_env="HOSTED_KEY"), CHAT, 8)
    assert server.requests == []


def test_answers_keep_the_order_text_and_billed_tokens(server: ChatServer) -> None:
    server.replies += [completion("first", 120, 30), completion("second", 80, 10), completion(None, 50, 0)]
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
    console = Console(record=True, width=120)

    answers = answer_with_api(server.rung(), prompts, 16, console)

    assert [request["body"]["messages"] for request in server.requests] == prompts
    assert server.most_in_flight == 1, "one request at a time"
    assert answers.outputs == ["first", "second", ""], "a null content is an empty answer"
    tokens = [(g.prompt_tokens, g.completion_tokens) for g in answers.generations]
    assert tokens == [(120, 30), (80, 10), (50, 0)]
    assert all(g.seconds > 0 for g in answers.generations)
    assert answers.seconds >= sum(g.seconds for g in answers.generations)
    assert "hosted: 3 answers in" in console.export_text()


def test_a_reply_without_usage_counts_no_tokens(server: ChatServer) -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
    server.replies += [
        Reply(body=json.dumps(body).encode()),
        Reply(body=json.dumps({**body, "usage": None}).encode()),
    ]

    answers = answer_with_api(server.rung(), [CHAT, CHAT], 8, Console(quiet=True))

    assert [(g.text, g.prompt_tokens, g.completion_tokens) for g in answers.generations] == [("hi", 0, 0)] * 2


def test_the_cost_per_request_comes_from_the_billed_tokens(server: ChatServer) -> None:
    server.replies += [completion("a", 120, 30), completion("b", 80, 10)]
    rung_config = server.rung(input_price=0.15, output_price=0.6)
    answers = answer_with_api(rung_config, [CHAT, CHAT], 16, Console(quiet=True))
    rung = Rung("hosted", "api", "tiny", "tiny", answers, 1, prices=(0.15, 0.6))
    tokens = {
        "prompt_mean": sum(g.prompt_tokens for g in answers.generations) / 2,
        "completion_mean": sum(g.completion_tokens for g in answers.generations) / 2,
    }
    timing = latency([g.seconds for g in answers.generations], answers.seconds, 1)

    record = cost_record(EvaluateConfig(), rung, timing, tokens)

    # 100 prompt tokens at $0.15/M and 20 completion tokens at $0.6/M: $27 per million requests
    assert tokens == {"prompt_mean": 100.0, "completion_mean": 20.0}
    assert record["per_1000_requests"] == pytest.approx(0.027)
    assert record["training_one_off"] == 0.0
    assert record["basis"] == "API at $0.15/$0.6 per million prompt/completion tokens"


@pytest.mark.parametrize(("status", "detail"), [(401, "Invalid API key"), (400, "max_tokens is too large")])
def test_an_error_about_the_request_is_reported_once_with_its_body(
    server: ChatServer, status: int, detail: str
) -> None:
    server.replies.append(Reply(status, json.dumps({"error": {"message": detail}}).encode()))

    with pytest.raises(HoneError) as raised:
        answer_with_api(server.rung(), [CHAT, CHAT], 8, Console(quiet=True))

    message = str(raised.value)
    assert message.startswith(f"evaluate.api hosted: {server.url}/chat/completions answered {status}: ")
    assert detail in message
    assert len(server.requests) == 1, "no retry, and the rung stops at the first failure"


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_rate_limits_and_overloaded_servers_are_retried(server: ChatServer, status: int) -> None:
    server.replies += [Reply(status, b'{"error": {"message": "slow down"}}'), completion("after all")]

    answers = answer_with_api(server.rung(), [CHAT], 8, Console(quiet=True))

    assert answers.outputs == ["after all"] and len(server.requests) == 2


def test_a_server_that_keeps_failing_is_an_error_after_the_last_attempt(server: ChatServer) -> None:
    server.replies += [Reply(503, b"overloaded") for _ in range(api.ATTEMPTS)] + [completion("too late")]

    with pytest.raises(HoneError, match=rf"answered 503: overloaded \(after {api.ATTEMPTS} attempts\)"):
        chat_completion(server.rung(), CHAT, 8)
    assert len(server.requests) == api.ATTEMPTS


def test_retry_after_is_the_wait_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    assert api.retry_after("3") == 3.0 and api.retry_after("-1") == 0.0
    assert api.retry_after(None) is None and api.retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None
    waits: list[float] = []
    monkeypatch.setattr(api.time, "sleep", waits.append)
    monkeypatch.setattr(api, "BACKOFF_SECONDS", 1.0)
    monkeypatch.setattr(api, "MAX_WAIT_SECONDS", 60.0)
    replies = iter([api.Retryable("a", 90.0), api.Retryable("b"), api.Retryable("c", 2.0), {"ok": True}])

    def scripted(*args: object) -> dict[str, object]:
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return reply

    monkeypatch.setattr(api, "request_completion", scripted)
    assert chat_completion(ApiRung(name="h", base_url="http://x", model="m"), CHAT, 8) == {"ok": True}
    assert waits == [60.0, 2.0, 2.0], "Retry-After capped, else the doubling backoff"


def test_a_long_error_body_is_cut_to_300_characters(server: ChatServer) -> None:
    server.replies.append(Reply(400, b"x" * 299 + b"yz" + b"!" * 1000))

    with pytest.raises(HoneError) as raised:
        chat_completion(server.rung(), CHAT, 8)

    assert str(raised.value).endswith(": " + "x" * 299 + "y")


@pytest.mark.parametrize(
    "body",
    [
        {"choices": []},
        {"choices": [{"message": {"role": "assistant"}}]},
        {"error": "overloaded"},
        [1, 2],
        "text",
    ],
)
def test_a_reply_without_content_is_named(server: ChatServer, body: object) -> None:
    server.replies.append(Reply(body=json.dumps(body).encode()))
    with pytest.raises(
        HoneError, match=r"evaluate.api hosted: the response has no choices\[0\].message.content"
    ):
        answer_with_api(server.rung(), [CHAT], 8, Console(quiet=True))


def test_a_body_that_is_not_json_is_an_error_a_person_can_act_on(server: ChatServer) -> None:
    server.replies.append(Reply(body=b"<html>Bad gateway</html>"))
    with pytest.raises(HoneError, match=r"evaluate\.api hosted: .* answered with no JSON .*Bad gateway"):
        chat_completion(server.rung(), CHAT, 8)


def test_a_server_that_does_not_answer_in_time(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "TIMEOUT_SECONDS", 0.3)
    server.replies.append(Reply(body=b"{}", hold=True))

    with pytest.raises(
        HoneError,
        match=r"evaluate.api hosted: cannot reach http://127\.0\.0\.1:\d+/v1/chat/completions: .*timed out",
    ):
        chat_completion(server.rung(), CHAT, 8)
    assert len(server.requests) == 1


def test_nothing_listening() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rung = ApiRung(name="hosted", base_url=f"http://127.0.0.1:{port}/v1", model="tiny")
    with pytest.raises(
        HoneError, match=rf"evaluate.api hosted: cannot reach http://127\.0\.0\.1:{port}/v1/chat.*attempts"
    ):
        chat_completion(rung, CHAT, 8)  # refused: retried, as a server restarting would be
