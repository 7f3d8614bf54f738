"""The OpenAI-compatible HTTP app: chat completions (streamed too), completions, models, health, metrics.

    POST /v1/chat/completions   messages -> a reply; `stream: true` sends server-sent events
    POST /v1/completions        a prompt -> its continuation
    GET  /v1/models             the base, the routes and the registry's versions and aliases
    GET  /healthz, /readyz      alive; ready once the base model is loaded
    GET  /metrics               Prometheus: requests and errors per version, latency, tokens, queue depth

Every response names the version that answered (`model` in the body, `x-hone-model-version` header).
Errors have OpenAI's shape ({"error": {"message", "type", "param", "code"}}): a bad request 400 naming
the limit or field, a missing or wrong API key 401, an unknown model 404, a full queue 429 with
Retry-After, never a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from hone.config import ServeConfig, ServeFile
from hone.errors import HoneError
from hone.serve.checks import OnlineChecks
from hone.serve.engine import Engine, Job, QueueFull
from hone.serve.log import RequestLog
from hone.serve.models import Resolver, Target, UnknownModel

RETRY_AFTER_SECONDS = 1


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": None}}
    return JSONResponse(body, status_code=error.status, headers=headers)


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    tokens: Counter
    queue: Gauge
    feedback: Counter
    checks: Counter

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry,
            Counter(
                "hone_requests", "Requests by version and status.", ["version", "status"], registry=registry
            ),
            Histogram("hone_request_seconds", "Request latency by version.", ["version"], registry=registry),
            Counter("hone_tokens", "Tokens by version and kind.", ["version", "kind"], registry=registry),
            Gauge("hone_queue_depth", "Requests waiting for the engine.", registry=registry),
            Counter(
                "hone_feedback", "Feedback by version and rating.", ["version", "rating"], registry=registry
            ),
            Counter(
                "hone_online_checks",
                "Answers by version, online check (monitor.json_schema, monitor.regex) and result.",
                ["version", "check", "result"],
                registry=registry,
            ),
        )


@dataclass
class Server:
    settings: ServeFile
    engine: Engine
    resolver: Resolver
    log: RequestLog
    metrics: Metrics
    checks: OnlineChecks = field(default_factory=lambda: OnlineChecks(None, False, None))
    ready: bool = False

    def grammar(self, schema: str | None) -> Any:
        return self.engine.compile(schema)


async def response_grammar(server: Server, body: dict[str, Any]) -> Any:
    """response_format: `json_object` (any JSON object) or `json_schema` (that schema), enforced while
    decoding, so every reply parses and follows it; `text` or none: no grammar."""
    form = body.get("response_format")
    if form is None:
        return None
    kind = form.get("type") if isinstance(form, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return await asyncio.to_thread(server.grammar, None)
    if kind != "json_schema":
        raise ApiError(
            400, "response_format.type must be text, json_object or json_schema", param="response_format"
        )
    schema = (
        (form.get("json_schema") or {}).get("schema") if isinstance(form.get("json_schema"), dict) else None
    )
    if not isinstance(schema, dict):
        raise ApiError(
            400, "response_format.json_schema.schema must be a JSON Schema object", param="response_format"
        )
    try:
        return await asyncio.to_thread(server.grammar, json.dumps(schema, sort_keys=True))
    except Exception as exc:  # xgrammar's errors for a schema it cannot compile
        raise ApiError(
            400, f"response_format.json_schema.schema: cannot be enforced: {exc}", param="response_format"
        ) from None


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def authorized(server: Server, request: Request) -> bool:
    """A request carries one of the configured keys (compared as sha256 digests, in constant time)."""
    accepted = server.settings.serve.api_key_sha256
    if not accepted:
        return True
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        return False
    digest = key_digest(header[7:].strip())
    return any(hmac.compare_digest(digest, known) for known in accepted)


def client_key(request: Request) -> str:
    """Whose budget a request spends: its API key's digest, else its client address."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return key_digest(header[7:].strip())
    return request.client.host if request.client else "unknown"


class RateLimiter:
    """A token bucket per client: `per_minute` requests, refilled evenly; None lets everything through."""

    def __init__(self, per_minute: int | None) -> None:
        self.per_minute = per_minute
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)
        self.lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> float | None:
        """None when the request may go; else the seconds until it could."""
        if self.per_minute is None:
            return None
        now = time.monotonic() if now is None else now
        rate = self.per_minute / 60.0
        with self.lock:
            tokens, counted = self.buckets.get(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - counted) * rate)
            if tokens >= 1.0:
                self.buckets[client] = (tokens - 1.0, now)
                return None
            self.buckets[client] = (tokens, now)
            return (1.0 - tokens) / rate


def number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ApiError(400, f"{name} must be a number from {low:g} to {high:g}", param=name)
    return float(value)


def limits(serve: ServeConfig, body: dict[str, Any]) -> dict[str, Any]:
    """The request's sampling settings, each checked against its range and the server's limits."""
    asked = body.get("max_completion_tokens", body.get("max_tokens"))
    if asked is None:
        asked = min(serve.default_max_tokens, serve.max_tokens)
    if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
        raise ApiError(400, "max_tokens must be a positive integer", param="max_tokens")
    if asked > serve.max_tokens:
        raise ApiError(
            400, f"max_tokens {asked} is above this server's limit of {serve.max_tokens}", param="max_tokens"
        )
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1", param="n")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "stop must be a string or a list of up to 4 non-empty strings", param="stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(400, "seed must be an integer", param="seed")
    return {
        "max_tokens": asked,
        "temperature": number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": number(body, "top_p", 1.0, 0.0, 1.0),
        "stop": stop,
        "seed": seed,
    }


def chat_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "user",
            "assistant",
            "developer",
        ):
            raise ApiError(400, f"messages[{index}].role must be system, user or assistant", param="messages")
        content = message.get("content")
        if isinstance(content, list):  # OpenAI's content parts: the text ones
            parts = [
                part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"
            ]
            content = "".join(part for part in parts if isinstance(part, str))
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{index}].content must be text", param="messages")
        role = "system" if message["role"] == "developer" else message["role"]
        checked.append({"role": role, "content": content})
    return checked


async def read_json(server: Server, request: Request) -> dict[str, Any]:
    limit = server.settings.serve.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(400, f"request body of {declared} bytes is above this server's limit of {limit} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise ApiError(400, f"request body is above this server's limit of {limit} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="hone", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if error.status == 429 else None
        return error_response(error, headers)

    limiter = RateLimiter(server.settings.serve.requests_per_minute)

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith("/v1/") and not authorized(server, request):
            return error_response(ApiError(401, "missing or wrong API key", "authentication_error"))
        if request.method == "POST" and request.url.path.startswith("/v1/"):
            wait = limiter.take(client_key(request))
            if wait is not None:
                error = ApiError(
                    429, f"rate limit: {limiter.per_minute} requests per minute", "rate_limit_error"
                )
                return error_response(error, {"Retry-After": str(max(1, math.ceil(wait)))})
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if not server.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics() -> Response:
        server.metrics.queue.set(server.engine.depth)
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = await asyncio.to_thread(server.resolver.names)
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "hone"} for n in names],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await read_json(server, request)
        return await complete(server, body, "chat", chat_messages(body))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await read_json(server, request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt must be a string", param="prompt")
        return await complete(server, body, "text", prompt)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        row = feedback_row(await read_json(server, request))
        answered = await asyncio.to_thread(server.log.request, row["response_id"])
        if answered is None:
            missing = f"no response {row['response_id']} in the request log"
            raise ApiError(404, missing, "not_found_error", "id")
        await asyncio.to_thread(server.log.add_feedback, **row)
        server.metrics.feedback.labels(answered["version"] or "", row["rating"]).inc()
        return JSONResponse({"id": row["id"], "object": "feedback", "response_id": row["response_id"]})

    return app


MAX_FEEDBACK_TEXT = 100_000  # characters of a correction or a comment


def feedback_row(body: dict[str, Any]) -> dict[str, Any]:
    """A feedback body checked: `id` (the response's), `rating` ("up", "down" or 1 to 5), optional
    `correction` (the answer it should have given), `comment` and `user`."""
    response_id = body.get("id", body.get("response_id"))
    if not isinstance(response_id, str) or not response_id or len(response_id) > 64:
        raise ApiError(400, "id must be the id of a response from this server", param="id")
    rating = body.get("rating")
    if rating in ("up", "down"):
        score = 1.0 if rating == "up" else 0.0
    elif isinstance(rating, int) and not isinstance(rating, bool) and 1 <= rating <= 5:
        score, rating = (rating - 1) / 4, str(rating)
    else:
        raise ApiError(400, 'rating must be "up", "down" or an integer from 1 to 5', param="rating")
    row: dict[str, Any] = {"id": f"fb-{uuid.uuid4().hex}", "response_id": response_id, "rating": rating,
                           "score": score}  # fmt: skip
    for name, limit in (("correction", MAX_FEEDBACK_TEXT), ("comment", MAX_FEEDBACK_TEXT), ("user", 256)):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise ApiError(400, f"{name} must be text of at most {limit:,} characters", param=name)
        row[name] = value
    return row


async def complete(server: Server, body: dict[str, Any], kind: str, prompt: Any) -> Response:
    """Resolve the model, queue the job, answer (streamed or whole), count and log it; `prompt` is the chat
    messages or the completion's text."""
    settings = limits(server.settings.serve, body)
    name, user = body.get("model"), body.get("user")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "model is required", param="model")
    if user is not None and not isinstance(user, str):
        raise ApiError(400, "user must be a string", param="user")
    try:
        target = await asyncio.to_thread(server.resolver.resolve, name, user)
    except UnknownModel as exc:
        raise ApiError(404, str(exc), "not_found_error", "model") from None
    except HoneError as exc:
        raise ApiError(400, str(exc), param="model") from None
    grammar = await response_grammar(server, body)
    text = prompt
    if kind == "chat":
        if target.system is not None and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": target.system}, *prompt]
        text = server.engine.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    prompt_ids = server.engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    stream = bool(body.get("stream"))
    job = Job(
        prompt_ids,
        target,
        settings["max_tokens"],
        settings["temperature"],
        settings["top_p"],
        settings["stop"],
        on_text=(lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)) if stream else None,
        on_done=lambda: loop.call_soon_threadsafe(finish, done, pieces),
        seed=settings["seed"],
        grammar=grammar,
    )
    began = time.perf_counter()
    try:
        server.engine.submit(job)
    except QueueFull:
        server.metrics.requests.labels(target.label, "429").inc()
        raise ApiError(
            429, "the server is busy: too many requests are waiting; retry shortly", "rate_limit_error"
        ) from None
    response_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
    record = Record(server, response_id, kind, name, target, user, prompt, began, len(prompt_ids))
    headers = {"x-hone-model-version": target.label, "x-request-id": response_id}
    if stream:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            events(record, job, pieces, include_usage), media_type="text/event-stream", headers=headers
        )
    await done
    await asyncio.to_thread(record.close, job)
    if job.error is not None:
        raise ApiError(500, f"generation failed: {job.error}", "server_error")
    return JSONResponse(record.body(job), headers=headers)


def finish(done: asyncio.Future[None], pieces: asyncio.Queue[str | None]) -> None:
    pieces.put_nowait(None)
    if not done.done():
        done.set_result(None)


@dataclass
class Record:
    """One request as it is answered, counted and logged."""

    server: Server
    id: str
    kind: str
    requested: str
    target: Target
    user: str | None
    logged: Any
    began: float
    prompt_tokens: int

    def usage(self, job: Job) -> dict[str, int]:
        completion = len(job.tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def body(self, job: Job) -> dict[str, Any]:
        created = int(time.time())
        if self.kind == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": job.text},
                "finish_reason": job.finish_reason,
            }
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": job.text, "finish_reason": job.finish_reason, "logprobs": None}
            kind = "text_completion"
        return {"id": self.id, "object": kind, "created": created, "model": self.target.label,
                "choices": [choice], "usage": self.usage(job)}  # fmt: skip

    def chunk(
        self, delta: dict[str, Any] | None, reason: str | None = None, text: str | None = None
    ) -> dict[str, Any]:
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": reason}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
            kind = "text_completion"
        return {
            "id": self.id,
            "object": kind,
            "created": int(time.time()),
            "model": self.target.label,
            "choices": [choice],
        }

    def close(self, job: Job) -> None:
        """Count and log the finished request (off the event loop's thread for the database write)."""
        seconds = time.perf_counter() - self.began
        status = 500 if job.error else 200
        metrics, label = self.server.metrics, self.target.label
        metrics.requests.labels(label, str(status)).inc()
        metrics.latency.labels(label).observe(seconds)
        metrics.tokens.labels(label, "prompt").inc(self.prompt_tokens)
        metrics.tokens.labels(label, "completion").inc(len(job.tokens))
        if job.error is None:
            for check, passed in self.server.checks(job.text).items():
                metrics.checks.labels(label, check, "pass" if passed else "fail").inc()
        self.server.log.write(
            id=self.id,
            endpoint=self.kind,
            requested=self.requested,
            version=label,
            user=self.user,
            status=status,
            latency_seconds=seconds,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(job.tokens),
            finish_reason=job.finish_reason,
            request=self.logged,
            response=job.text,
            error=job.error,
        )


async def events(
    record: Record, job: Job, pieces: asyncio.Queue[str | None], include_usage: bool
) -> AsyncIterator[str]:
    """Server-sent events as OpenAI streams them: a role chunk, content chunks, a finish chunk, [DONE]."""
    if record.kind == "chat":
        yield sse(record.chunk({"role": "assistant", "content": ""}))
    while (piece := await pieces.get()) is not None:
        yield sse(record.chunk({"content": piece}, text=piece))
    await asyncio.to_thread(record.close, job)
    if job.error is not None:
        yield sse({"error": {"message": f"generation failed: {job.error}", "type": "server_error"}})
    else:
        yield sse(record.chunk({}, job.finish_reason))
        if include_usage:
            yield sse({**record.chunk(None), "choices": [], "usage": record.usage(job)})
    yield "data: [DONE]\n\n"


def sse(value: dict[str, Any]) -> str:
    return f"data: {json.dumps(value, ensure_ascii=False)}\n\n"
