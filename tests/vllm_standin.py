"""A stand-in for vLLM's `vllm serve`, for tests on machines without a GPU.

It takes `vllm serve MODEL [options]` as vLLM does and speaks the part of vLLM's OpenAI server that hone
uses, over real HTTP on the given 127.0.0.1 port: GET /health, GET /v1/models, POST /v1/load_lora_adapter
(refused unless VLLM_ALLOW_RUNTIME_LORA_UPDATING is set, as vLLM does), and POST /v1/completions with token
id prompts, `stream` (server-sent events ending in [DONE]), `stream_options.include_usage`,
`return_token_ids`, `stop` and `structured_outputs.json`. Its replies are made up but deterministic:

    " <model> heard <prompt length> tokens and then some more words ..."   cut at max_tokens or a stop string
    {"model": "<model>"}                                                   with structured_outputs

One "token" is one of those words. A prompt holding token id 0 fails mid-stream with an error event. GET
/stats (the stand-in's own) tells what it saw: the request bodies, the loaded adapters and the most
completions in flight at once.

HONE_VLLM_STANDIN_MODE: "die" exits at start with an error on stderr; "hang" never becomes healthy.
HONE_VLLM_STANDIN_RECORD: a file to which each start appends one JSON line (its argv, pid, environment).
HONE_VLLM_STANDIN_DELAY: seconds per generated token (default 0.002).

Tests put it on PATH as `vllm` with `install`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

WORDS = ["and", "then", "some", "more", "words", "about", "nothing", "much"]


def install(folder: Path, monkeypatch: Any, mode: str = "", delay: float | None = None) -> Path:
    """Put a `vllm` command that runs this stand-in first on PATH; the file each start is recorded in."""
    folder.mkdir(parents=True, exist_ok=True)
    command = folder / "vllm"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n')
    command.chmod(0o755)
    record = folder / "starts.jsonl"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("HONE_VLLM_STANDIN_RECORD", str(record))
    monkeypatch.setenv("HONE_VLLM_STANDIN_MODE", mode)
    if delay is not None:
        monkeypatch.setenv("HONE_VLLM_STANDIN_DELAY", str(delay))
    return record


def starts(record: Path) -> list[dict[str, Any]]:
    """What each start of the stand-in saw, in order."""
    if not record.is_file():
        return []
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: vllm serve MODEL [options]")
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--lora-modules", nargs="+", default=[])
    options, _ = parser.parse_known_args(sys.argv[2:])
    record = os.environ.get("HONE_VLLM_STANDIN_RECORD")
    if record:
        seen = {"argv": sys.argv[1:], "pid": os.getpid(), "runtime_lora": os.environ.get(
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING")}  # fmt: skip
        with open(record, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(seen) + "\n")
    print(f"INFO stand-in vLLM loading {options.model}", flush=True)
    mode = os.environ.get("HONE_VLLM_STANDIN_MODE", "")
    if mode == "die":
        print("RuntimeError: stand-in vLLM found no CUDA device", file=sys.stderr, flush=True)
        sys.exit(3)
    if mode == "hang":
        while True:
            time.sleep(1)
    state = State(options.served_model_name[0] if options.served_model_name else options.model)
    for module in options.lora_modules:
        name, path = module.split("=", 1)
        state.loras[name] = path
    server = ThreadingHTTPServer((options.host, options.port), handler(state))
    print(f"INFO stand-in vLLM serving on {options.host}:{options.port}", flush=True)
    server.serve_forever()


class State:
    def __init__(self, served: str) -> None:
        self.served = served
        self.loras: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.delay = float(os.environ.get("HONE_VLLM_STANDIN_DELAY", "0.002"))


def reply(model: str, body: dict[str, Any]) -> tuple[list[str], str]:
    """The made-up reply's pieces (one per token) and its finish reason."""
    prompt = body["prompt"]
    if (body.get("structured_outputs") or {}).get("json") is not None:
        text = json.dumps({"model": model}, separators=(",", ":"))
        return [text[i : i + 4] for i in range(0, len(text), 4)], "stop"
    words = [model, "heard", str(len(prompt)), "tokens", *WORDS * 8]
    pieces = [f" {word}" for word in words]
    limit = int(body.get("max_tokens") or 16)
    reason = "length" if limit < len(pieces) else "stop"
    pieces = pieces[:limit]
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    text = ""
    for index, piece in enumerate(pieces):
        for stop in stops:
            cut = (text + piece).find(stop)
            if cut >= 0:
                return [*pieces[:index], (text + piece)[len(text) : cut]], "stop"
        text += piece
    return pieces, reason


def handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def send(self, status: int, value: Any, content_type: str = "application/json") -> None:
            data = (json.dumps(value) if content_type == "application/json" else str(value)).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def error(self, status: int, message: str) -> None:
            self.send(status, {"error": {"message": message, "type": "BadRequestError", "code": status}})

        def do_GET(self) -> None:
            if self.path == "/health":
                self.send(200, "", "text/plain")
            elif self.path == "/v1/models":
                names = [state.served, *state.loras]
                self.send(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]})
            elif self.path == "/stats":
                with state.lock:
                    stats = {"requests": state.requests, "loras": state.loras,
                             "max_in_flight": state.max_in_flight}  # fmt: skip
                self.send(200, stats)
            else:
                self.error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path == "/v1/load_lora_adapter":
                self.load_adapter(body)
            elif self.path == "/v1/completions":
                with state.lock:
                    state.requests.append(body)
                    state.in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, state.in_flight)
                try:
                    self.complete(body)
                finally:
                    with state.lock:
                        state.in_flight -= 1
            else:
                self.error(404, f"no route {self.path}")

        def load_adapter(self, body: dict[str, Any]) -> None:
            if os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "").lower() not in ("1", "true"):
                self.error(404, "runtime LoRA loading is off")
            elif body["lora_name"] in state.loras:
                self.error(400, f"The lora adapter '{body['lora_name']}' has already been loaded.")
            elif not Path(body["lora_path"], "adapter_config.json").is_file():
                self.error(400, f"No adapter found for {body['lora_path']}")
            else:
                with state.lock:
                    state.loras[body["lora_name"]] = body["lora_path"]
                self.send(
                    200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.", "text/plain"
                )

        def complete(self, body: dict[str, Any]) -> None:
            model = body.get("model")
            if model != state.served and model not in state.loras:
                self.error(404, f"The model `{model}` does not exist.")
                return
            prompt = body.get("prompt")
            if not isinstance(prompt, list) or not all(isinstance(token, int) for token in prompt):
                self.error(400, "the stand-in takes prompts as token ids")
                return
            pieces, reason = reply(model, body)
            ids = [1000 + index for index in range(len(pieces))]
            usage = {"prompt_tokens": len(prompt), "completion_tokens": len(pieces),
                     "total_tokens": len(prompt) + len(pieces)}  # fmt: skip
            with_ids = bool(body.get("return_token_ids"))
            if not body.get("stream"):
                time.sleep(state.delay * len(pieces))
                choice = {"index": 0, "text": "".join(pieces), "finish_reason": reason}
                if with_ids:
                    choice["token_ids"] = ids
                self.send(200, {"id": "cmpl-standin", "object": "text_completion", "model": model,
                                "choices": [choice], "usage": usage})  # fmt: skip
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for index, piece in enumerate(pieces):
                time.sleep(state.delay)
                if 0 in prompt and index == 1:
                    self.event({"error": {"message": "stand-in failure mid-stream", "code": 500}})
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                last = index == len(pieces) - 1
                choice = {"index": 0, "text": piece, "finish_reason": reason if last else None}
                if with_ids:
                    choice["token_ids"] = [ids[index]]
                self.event({"id": "cmpl-standin", "object": "text_completion", "model": model,
                            "choices": [choice]})  # fmt: skip
            if (body.get("stream_options") or {}).get("include_usage"):
                self.event({"id": "cmpl-standin", "object": "text_completion", "model": model,
                            "choices": [], "usage": usage})  # fmt: skip
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def event(self, value: dict[str, Any]) -> None:
            self.wfile.write(f"data: {json.dumps(value)}\n\n".encode())
            self.wfile.flush()

    return Handler


if __name__ == "__main__":
    main()
