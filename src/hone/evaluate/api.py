"""A hosted model as a rung of the ladder: any OpenAI-compatible chat completions endpoint.

Requests go one at a time with temperature 0, so the latency recorded is what one caller waits (retries
of rate-limited or overloaded answers included);
prompt and completion tokens come from the response's `usage`, which is what the API bills. The
standard library's HTTP client is enough here and keeps the rung free of an SDK dependency.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console

from hone.config import ApiRung
from hone.errors import HoneError
from hone.evaluate.generate import Generation
from hone.evaluate.task import Answers

TIMEOUT_SECONDS = 120
# Rate limits and overloaded or restarting servers pass: such answers are retried after the server's
# Retry-After (at most MAX_WAIT_SECONDS), else after 1, 2, 4, 8 s; an error about the request is not.
RETRY_STATUSES = (429, 500, 502, 503, 504)
ATTEMPTS = 5
BACKOFF_SECONDS = 1.0
MAX_WAIT_SECONDS = 60.0


def chat_completion(api: ApiRung, messages: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    """One chat completion, retried on rate limits, 5xx answers and refused connections."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return request_completion(api, messages, max_new_tokens)
        except Retryable as exc:
            if attempt == ATTEMPTS:
                raise HoneError(f"{exc} (after {ATTEMPTS} attempts)") from None
            time.sleep(
                min(
                    exc.wait if exc.wait is not None else BACKOFF_SECONDS * 2 ** (attempt - 1),
                    MAX_WAIT_SECONDS,
                )
            )
    raise AssertionError("unreachable")


class Retryable(Exception):
    """An answer that may be different if asked again; `wait` is the server's Retry-After, if it gave one."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: wait the usual backoff instead
        return None


def request_completion(api: ApiRung, messages: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    body = {"model": api.model, "messages": messages, "max_tokens": max_new_tokens, "temperature": 0}
    headers = {"Content-Type": "application/json"}
    if api.api_key_env:
        key = os.environ.get(api.api_key_env)
        if not key:
            raise HoneError(f"evaluate.api {api.name}: environment variable {api.api_key_env} is not set")
        headers["Authorization"] = f"Bearer {key}"
    url = api.base_url.rstrip("/") + "/chat/completions"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        message = f"evaluate.api {api.name}: {url} answered {exc.code}: {detail}"
        if exc.code in RETRY_STATUSES:
            raise Retryable(message, retry_after(exc.headers.get("Retry-After"))) from None
        raise HoneError(message) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        message = f"evaluate.api {api.name}: cannot reach {url}: {exc}"
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (ConnectionRefusedError, ConnectionResetError)):  # restarting: try again
            raise Retryable(message) from None
        raise HoneError(message) from None
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        shown = body[:300].decode("utf-8", "replace")
        raise HoneError(f"evaluate.api {api.name}: {url} answered with no JSON ({exc}): {shown}") from None


def answer_with_api(
    api: ApiRung, prompts: list[list[dict[str, Any]]], max_new_tokens: int, console: Console
) -> Answers:
    generations = []
    began = time.perf_counter()
    for messages in prompts:
        start = time.perf_counter()
        reply = chat_completion(api, messages, max_new_tokens)
        seconds = time.perf_counter() - start
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise HoneError(
                f"evaluate.api {api.name}: the response has no choices[0].message.content"
            ) from None
        usage = reply.get("usage") or {}
        generations.append(
            Generation(
                text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), seconds
            )
        )
    total = time.perf_counter() - began
    console.print(f"  {api.name}: {len(prompts)} answers in {total:.0f} s")
    return Answers(generations, total)
