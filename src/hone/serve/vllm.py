"""The vllm engine: `hone serve` in front of vLLM's OpenAI server, which does the generating.

hone keeps everything it does with the transformers engine (model names, registry aliases, routes and
canaries, keys, limits, the request log, metrics) and forwards each job to vLLM's `/v1/completions` as the
prompt's token ids, streamed, so each piece of text reaches the client as vLLM decodes it. vLLM batches
the requests in flight itself (continuous batching), so hone only bounds them: `serve.max_batch` worker
threads each forward one job at a time, and jobs beyond those wait in a queue of `serve.max_queue`.
A version's adapter is loaded into vLLM the first time it is asked for; vLLM keeps `serve.max_adapters`
of them on the GPU and reloads an evicted one from its folder when it is asked for again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from hone.config import ServeFile
from hone.engines.vllm import BASE_NAME, VllmServer, adapter_name, vllm_lora_rank
from hone.serve.engine import Job, QueueFull
from hone.serve.models import Target

logger = logging.getLogger(__name__)

UNKNOWN_TOKEN = -1  # a completion token whose id vLLM did not return: usage needs only their count


class VllmEngine:
    def __init__(self, server: VllmServer, tokenizer: Any, max_batch: int = 16, max_queue: int = 64) -> None:
        self.server = server
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.running = False
        self.workers: list[threading.Thread] = []

    @classmethod
    def create(cls, settings: ServeFile, base: Path, tokenizer: Any) -> VllmEngine:
        """The engine over the resolved base folder; vLLM itself starts with `start`."""
        serve = settings.serve
        server = VllmServer(
            base,
            serve.vllm,
            log_file=Path.cwd() / ".hone" / "vllm.log",  # beside the request log
            max_loras=serve.max_adapters,
            max_lora_rank=vllm_lora_rank(serve.max_lora_rank, "serve.max_lora_rank"),
            setting="serve.vllm",
        )
        return cls(server, tokenizer, serve.max_batch, serve.max_queue)

    # Lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start vLLM (returning once it is ready, or failing with its log's last lines), then the workers."""
        self.server.start()
        self.running = True
        self.workers = [
            threading.Thread(target=self.loop, name=f"hone-vllm-{number}", daemon=True)
            for number in range(self.max_batch)
        ]
        for worker in self.workers:
            worker.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the jobs in flight and queued, then stop vLLM."""
        self.running = False
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        self.server.stop()

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def compile(self, schema: str | None) -> Any:
        """What vLLM's structured outputs take: the JSON Schema itself (any JSON object when None), checked
        here so that a schema that is no schema is the client's 400, not a failed generation."""
        from jsonschema.validators import validator_for

        parsed = json.loads(schema) if schema else {"type": "object"}
        validator_for(parsed).check_schema(parsed)
        return parsed

    # Forwarding ----------------------------------------------------------------------------------------

    def loop(self) -> None:
        while self.running or not self.queue.empty():
            try:
                job = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            self.run(job)

    def run(self, job: Job) -> None:
        """Forward one job and stream its text back; any failure is the job's error, and on_done is always
        called."""
        job.started = time.perf_counter()
        try:
            self.forward(job)
        except Exception as exc:
            logger.warning("vLLM generation failed: %s", exc)
            job.error = str(exc)
            job.finish_reason = "error"
        finally:
            job.finished = time.perf_counter()
            if job.on_done is not None:
                job.on_done()

    def model_name(self, target: Target) -> str:
        if target.adapter is None:
            return BASE_NAME
        name = adapter_name(target.key)
        self.server.load_adapter(name, target.adapter)
        return name

    def forward(self, job: Job) -> None:
        body = completion_request(job, self.model_name(job.target))
        usage: dict[str, Any] = {}
        returned_ids = False
        for event in self.server.stream("/v1/completions", body):
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                piece = choice.get("text") or ""
                if choice.get("token_ids") is not None:
                    returned_ids = True
                    job.tokens.extend(int(token) for token in choice["token_ids"])
                if piece:
                    job.text += piece
                    if job.on_text is not None:
                        job.on_text(piece)
                    job.sent = len(job.text)
                if choice.get("finish_reason"):
                    job.finish_reason = choice["finish_reason"]
        if not returned_ids and usage.get("completion_tokens"):
            job.tokens = [UNKNOWN_TOKEN] * int(usage["completion_tokens"])
        if job.finish_reason is None:
            job.finish_reason = "stop"


def completion_request(job: Job, model: str) -> dict[str, Any]:
    """vLLM's `/v1/completions` body for a job: its sampling settings, streamed, with token ids back."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": job.prompt_ids,
        "max_tokens": job.max_tokens,
        "temperature": job.temperature,
        "top_p": job.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }
    if job.stop:
        body["stop"] = job.stop
    if job.seed is not None:
        body["seed"] = job.seed
    if job.grammar is not None:  # compact JSON, as the transformers engine writes it
        body["structured_outputs"] = {"json": job.grammar, "disable_any_whitespace": True}
    return body
