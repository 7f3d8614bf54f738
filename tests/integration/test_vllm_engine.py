"""The vllm engine over real HTTP on 127.0.0.1, twice over: a client talks to `hone serve` (uvicorn, the
tiny model's tokenizer, a real registry), which forwards to a `vllm` process it started; and the ladder's
local rungs generate through one such process. The process is a stand-in (tests/vllm_standin.py) that
speaks the part of vLLM's OpenAI server hone uses, since vLLM has no CPU build; its made-up replies say
which model answered and how many prompt tokens it was sent."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from completed_runs import lora_run
from hone.config import HoneConfig, ServeFile, VllmSettings
from hone.engines.vllm import BASE_NAME, VllmServer, adapter_name
from hone.errors import HoneError
from hone.evaluate.generate import encode_chat
from hone.evaluate.ladder import run_evaluation
from hone.evaluate.vllm import VllmRungs, candidate_key, check_candidates
from hone.io import alive
from hone.registry.gate import promote
from hone.registry.refs import Ref
from hone.registry.store import Registry
from hone.runs import open_language_model_run
from hone.serve import build_server
from hone.serve.engine import Job, QueueFull
from hone.serve.models import Target
from hone.serve.vllm import VllmEngine
from vllm_standin import install, starts

PROMPT = [{"role": "user", "content": "My invoice was charged twice"}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(settings: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """`hone serve` on a free 127.0.0.1 port for the block (its engine starts vLLM), stopped after it."""
    import uvicorn

    server, app = build_server(ServeFile.model_validate(settings))
    port = free_port()
    http = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and call(url, "/readyz")[0] != 200:
        time.sleep(0.05)
    try:
        yield url, server
    finally:
        http.should_exit = True
        thread.join(timeout=60)


def call(url: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text, status, headers = response.read().decode(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        text, status, headers = exc.read().decode(), exc.code, dict(exc.headers)
    except OSError:
        return 0, None, {}
    try:
        return status, json.loads(text), headers
    except ValueError:
        return status, text, headers


def chat(url: str, model: str, **extra: Any) -> tuple[int, Any, dict[str, str]]:
    body = {"model": model, "messages": PROMPT, "max_tokens": 6, "temperature": 0, **extra}
    return call(url, "/v1/chat/completions", body)


def standin_reply(model: str, prompt_tokens: int, tokens: int) -> str:
    words = [model, "heard", str(prompt_tokens), "tokens", "and", "then", "some", "more"]
    return "".join(f" {word}" for word in words[:tokens])


def test_hone_serve_forwards_base_versions_and_run_folders_to_vllm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tokenizer: Any
) -> None:
    record = install(tmp_path / "bin", monkeypatch)
    monkeypatch.chdir(tmp_path)  # vLLM's log goes to .hone/ beside the request log
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = Registry(uri)
    registry.add(lora_run(tmp_path / "runs", tiny_model_dir, "first", 1, "Reply in JSON."), "support")
    promote(registry, Ref("support", 1), "production", Console(quiet=True), force=True, reason="test setup")
    folder = lora_run(tmp_path / "runs", tiny_model_dir, "second", 2)
    settings = {
        "model": {"reference": str(tiny_model_dir)},
        "track": {"uri": uri},
        "serve": {"engine": "vllm", "max_lora_rank": 4, "routes": {"support": {"support@production": 1}}},
    }
    with serving(settings) as (url, server):
        [start] = starts(record)
        argv = start["argv"]
        assert argv[:2] == ["serve", str(tiny_model_dir)] and start["runtime_lora"] == "True"
        assert argv[argv.index("--max-lora-rank") + 1] == "8" and argv[argv.index("--max-loras") + 1] == "8"
        assert argv[argv.index("--served-model-name") + 1] == BASE_NAME

        status, body, headers = chat(url, "base", user="u1")
        assert status == 200 and headers["x-hone-model-version"] == str(tiny_model_dir)
        usage = body["usage"]
        assert body["choices"][0]["message"]["content"] == standin_reply(BASE_NAME, usage["prompt_tokens"], 6)
        assert body["choices"][0]["finish_reason"] == "length" and usage["completion_tokens"] == 6

        for model, label, run_name in (("support@production", "support/1", "support/1"),
                                       ("support", "support/1", "support/1"),
                                       (str(folder), "second", f"run:{folder.resolve()}")):  # fmt: skip
            status, body, headers = chat(url, model)
            assert status == 200 and body["model"] == label == headers["x-hone-model-version"]
            name = adapter_name(run_name)
            expected = standin_reply(name, body["usage"]["prompt_tokens"], 6)
            assert body["choices"][0]["message"]["content"] == expected
        stats = call(server.engine.server.url, "/stats")[1]
        assert set(stats["loras"]) == {adapter_name("support/1"), adapter_name(f"run:{folder.resolve()}")}
        assert stats["loras"][adapter_name(f"run:{folder.resolve()}")] == str(folder / "adapter")
        sent_prompts = [tokenizer.decode(request["prompt"]) for request in stats["requests"]]
        assert "Reply in JSON." in sent_prompts[1], "support/1 was trained under this system prompt"
        assert "Reply in JSON." not in sent_prompts[3]

        status, body, _ = chat(url, "base", stop=[" then"], temperature=0.5, top_p=0.9, seed=7, max_tokens=8)
        sent = call(server.engine.server.url, "/stats")[1]["requests"][-1]
        assert {key: sent[key] for key in ("temperature", "top_p", "seed", "stop", "max_tokens")} == {
            "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": [" then"], "max_tokens": 8}  # fmt: skip
        assert (
            sent["stream"] and sent["stream_options"] == {"include_usage": True} and sent["return_token_ids"]
        )
        assert body["choices"][0]["message"]["content"].endswith(" tokens and")
        assert body["choices"][0]["finish_reason"] == "stop"

        schema = {"type": "object", "properties": {"model": {"type": "string"}}, "required": ["model"]}
        form = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
        status, body, _ = chat(url, "base", response_format=form)
        assert status == 200 and json.loads(body["choices"][0]["message"]["content"]) == {"model": BASE_NAME}
        sent = call(server.engine.server.url, "/stats")[1]["requests"][-1]
        assert sent["structured_outputs"] == {"json": schema, "disable_any_whitespace": True}
        bad = {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}
        assert chat(url, "base", response_format=bad)[0] == 400

        rows_before = len(server.log.rows())
        status, body, _ = call(url, "/v1/completions", {"model": "base", "prompt": "<|endoftext|> hi"})
        assert status == 500 and "stand-in failure mid-stream" in body["error"]["message"]

        metrics = call(url, "/metrics")[1]
        assert 'hone_requests_total{status="200",version="support/1"} 2.0' in metrics
        assert 'hone_requests_total{status="500"' in metrics
        rows = server.log.rows()
    assert rows[0]["user"] == "u1" and rows[0]["completion_tokens"] == 6 and len(rows) == rows_before + 1
    assert rows[-1]["status"] == 500
    assert wait_dead(start["pid"]), "vLLM stops with the server"
    assert "stand-in vLLM serving" in (tmp_path / ".hone" / "vllm.log").read_text()


def test_streamed_replies_come_piece_by_piece_with_usage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    install(tmp_path / "bin", monkeypatch)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = {
        "model": {"reference": str(tiny_model_dir)},
        "track": {"uri": uri},
        "serve": {"engine": "vllm"},
    }
    with serving(settings) as (url, _):
        whole = chat(url, "base")[1]["choices"][0]["message"]["content"]
        body = {"model": "base", "messages": PROMPT, "max_tokens": 6, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        status, text, _ = call(url, "/v1/chat/completions", body)
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(pieces) == whole and len([piece for piece in pieces if piece]) == 6
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 6


def test_the_engine_bounds_requests_in_flight_and_queued_and_fails_jobs_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer: Any
) -> None:
    install(tmp_path / "bin", monkeypatch, delay=0.01)
    engine = VllmEngine(VllmServer("base", VllmSettings(), tmp_path / "vllm.log"), tokenizer, 2, 16)
    done = threading.Semaphore(0)
    jobs = [job_for(Target("base", "base"), [5] * (3 + i), done) for i in range(6)]
    missing = job_for(Target("gone", "gone", tmp_path / "no-adapter"), [5, 6], done)
    engine.start()
    try:
        for job in [*jobs, missing]:
            engine.submit(job)
        assert all(done.acquire(timeout=30) for _ in range(7))
        stats = json.loads(engine.server.request("/stats"))
    finally:
        engine.stop()
    assert stats["max_in_flight"] == 2, "serve.max_batch requests in flight; vLLM batches them"
    for number, job in enumerate(jobs):
        assert job.error is None and job.text == standin_reply(BASE_NAME, 3 + number, 4)
        assert job.tokens == [1000, 1001, 1002, 1003] and job.finish_reason == "length"
        assert job.finished >= job.started > 0
    assert missing.error is not None and "No adapter found" in missing.error
    assert missing.finish_reason == "error"

    idle = VllmEngine(VllmServer("base", VllmSettings(), tmp_path / "idle.log"), tokenizer, 1, 1)
    idle.submit(job_for(Target("base", "base"), [1], done))
    with pytest.raises(QueueFull):
        idle.submit(job_for(Target("base", "base"), [1], done))


def job_for(target: Target, prompt: list[int], done: threading.Semaphore) -> Job:
    return Job(prompt, target, max_tokens=4, on_done=done.release)


def test_the_ladder_generates_every_local_rung_through_one_vllm_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, small_task: dict[str, Path]
) -> None:
    record = install(tmp_path / "bin", monkeypatch)
    candidate = lora_run(tmp_path / "runs", tiny_model_dir, "tuned", 1)
    config = HoneConfig.model_validate(
        {
            "model": {"reference": str(tiny_model_dir)},
            "data": {"train": str(small_task["train"]), "test": str(small_task["test"])},
            "evaluate": {
                "engine": "vllm",
                "rungs": ["zero-shot", "few-shot"],
                "candidates": [str(candidate)],
                "max_new_tokens": 5,
                "batch_size": 3,
                "general": {"enabled": False},
                "bootstrap_resamples": 100,
            },
            "run": {"name": "ev", "dir": str(tmp_path / "runs")},
            "track": {"enabled": False},
        }
    )
    run, ladder = run_evaluation(config, [], Console(quiet=True))
    [start] = starts(record)
    name = adapter_name(f"run:{candidate.resolve()}")
    argv = start["argv"]
    assert argv[argv.index("--lora-modules") + 1] == f"{name}={candidate / 'adapter'}"
    assert argv[argv.index("--max-lora-rank") + 1] == "8" and argv[argv.index("--max-loras") + 1] == "1"
    assert wait_dead(start["pid"]), "the server stops when the local rungs are done"
    assert [rung.name for rung in ladder.rungs] == ["zero-shot", "few-shot", "tuned"]
    for rung, model in (("zero-shot", BASE_NAME), ("few-shot", BASE_NAME), ("tuned", name)):
        rows = [json.loads(line) for line in (run.path / "eval" / f"{rung}.jsonl").read_text().splitlines()]
        assert len(rows) == 6
        for row in rows:
            assert (
                row["output"] == standin_reply(model, row["prompt_tokens"], 5)
                and row["completion_tokens"] == 5
            )
    assert "stand-in vLLM serving" in (run.path / "vllm.log").read_text()


def test_rung_prompts_go_out_concurrently_and_come_back_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer: Any
) -> None:
    install(tmp_path / "bin", monkeypatch, delay=0.01)
    prompts = [[{"role": "user", "content": "word " * (i + 1)}] for i in range(7)]
    advanced: list[int] = []
    with VllmServer("base", VllmSettings(), tmp_path / "vllm.log") as server:
        generations = VllmRungs(server, 3, 2).generator(None, tokenizer)(prompts, advanced.append)
        stats = json.loads(server.request("/stats"))
    lengths = [len(ids) for ids in encode_chat(tokenizer, prompts)]
    assert [g.text for g in generations] == [standin_reply(BASE_NAME, n, 3) for n in lengths]
    assert [g.prompt_tokens for g in generations] == lengths and sum(advanced) == 7
    assert stats["max_in_flight"] == 2 and all(request["temperature"] == 0 for request in stats["requests"])


def test_candidates_vllm_cannot_serve_are_refused_before_any_rung(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run = open_language_model_run(lora_run(tmp_path / "runs", tiny_model_dir), "are evaluated")
    config = HoneConfig.model_validate(
        {"model": {"reference": str(tiny_model_dir)}, "data": {"train": "t.jsonl"}}
    )
    check_candidates(config, [run])
    with pytest.raises(HoneError, match=r"a full fine-tune; evaluate\.engine vllm serves LoRA adapters"):
        check_candidates(config, [replace(run, kind="full")])
    other = config.model_copy(update={"model": config.model.model_copy(update={"reference": "smollm2-135m"})})
    with pytest.raises(HoneError, match=r"not on model\.reference 'smollm2-135m'"):
        check_candidates(other, [run])
    assert candidate_key(run) == f"run:{run.path.resolve()}"


def wait_dead(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False
