"""A hosted model as a rung of the ladder: any OpenAI-compatible chat completions endpoint.

Requests go one at a time with temperature 0, so the latency recorded is what one caller waits;
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


def chat_completion(api: ApiRung, messages: list[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
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
        raise HoneError(f"evaluate.api {api.name}: {url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise HoneError(f"evaluate.api {api.name}: cannot reach {url}: {exc}") from None
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
