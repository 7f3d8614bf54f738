"""The transformers engine: one base model in memory, many LoRA adapters over it, requests batched together.

Requests wait in a bounded queue; one engine thread takes up to `serve.max_batch` of them at a time and
decodes them together, whatever adapter each asks for: PEFT applies each row's adapter in the same
forward pass (`adapter_names`, its mixed-adapter batches), and rows for the base model get none. Adapters
load on first use and the least recently used one is dropped beyond `serve.max_adapters` (never one that a
batch in flight is using).

The decoding loop is hone's own rather than `model.generate`: `generate` takes one temperature and one
length for the whole batch and has no per-row stream, while a server batches requests that each have their
own sampling settings, `max_tokens`, stop strings and streaming client. Each step hands every row's new
text to its request as soon as it is decoded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hone.serve.models import Target

logger = logging.getLogger(__name__)

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class QueueFull(Exception):
    """More requests wait than `serve.max_queue` allows: the caller answers 429."""


@dataclass
class Job:
    """One request's generation: what to decode, and where its text and its end go."""

    prompt_ids: list[int]
    target: Target
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    on_text: Callable[[str], None] | None = None  # each new piece of text, from the engine thread
    on_done: Callable[[], None] | None = None  # called once, from the engine thread, when it has ended
    seed: int | None = None
    grammar: Any = None  # a compiled xgrammar grammar the reply must follow (response_format), or None
    # filled in by the engine
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    sent: int = 0  # characters of `text` already handed to on_text
    started: float = 0.0
    finished: float = 0.0


class TransformersEngine:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_adapters: int = 8,
        max_batch: int = 16,
        max_queue: int = 64,
    ) -> None:
        self.base = model.eval()
        self.model: Any = self.base  # becomes a PeftModel when the first adapter is loaded
        self.tokenizer = tokenizer
        self.max_adapters = max_adapters
        self.max_batch = max_batch
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.adapters: OrderedDict[str, str] = OrderedDict()  # target key -> PEFT adapter name, LRU order
        self.loaded = 0  # adapters loaded so far (their PEFT names are a0, a1, ...)
        self.device = next(model.parameters()).device
        self.running = False
        self.thread: threading.Thread | None = None
        self.batches = 0

    # Lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self.thread = threading.Thread(target=self.loop, name="hone-engine", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish what is queued, then stop the engine thread."""
        self.running = False
        if self.thread is not None:
            self.thread.join(timeout=timeout)

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def loop(self) -> None:
        while self.running or not self.queue.empty():
            try:
                first = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.run(batch)
            except Exception as exc:  # one bad batch fails its requests, never the server
                logger.exception("generation failed")
                for job in batch:
                    if job.finish_reason is None:
                        job.error = f"{type(exc).__name__}: {exc}"
                        self.end(job, "error")

    # Adapters ------------------------------------------------------------------------------------------

    def adapter(self, target: Target, in_use: set[str]) -> str:
        """The PEFT name of the target's adapter, loaded (the least recently used dropped) if need be."""
        if target.adapter is None:
            return BASE_ROW
        if target.key in self.adapters:
            self.adapters.move_to_end(target.key)
            return self.adapters[target.key]
        while len(self.adapters) >= self.max_adapters:
            victim = next((key for key in self.adapters if key not in in_use), None)
            if victim is None:
                break  # every loaded adapter is in this batch: go over the limit for it
            self.drop(victim)
        name = f"a{self.loaded}"
        self.loaded += 1
        self.load(target.adapter, name)
        self.adapters[target.key] = name
        return name

    def load(self, folder: Path, name: str) -> None:
        from peft import PeftModel

        if self.model is self.base:
            self.model = PeftModel.from_pretrained(self.base, str(folder), adapter_name=name)
        else:
            self.model.load_adapter(str(folder), adapter_name=name)
        self.model.eval()
        logger.info("loaded adapter %s from %s", name, folder)

    def drop(self, key: str) -> None:
        name = self.adapters.pop(key)
        remaining = list(self.adapters.values())
        if remaining and self.model.active_adapter == name:
            self.model.set_adapter(remaining[-1])
        if remaining:
            self.model.delete_adapter(name)
        logger.info("dropped adapter %s (%s)", name, key)

    # Decoding ------------------------------------------------------------------------------------------

    def run(self, batch: list[Job]) -> None:
        self.batches += 1
        in_use = {job.target.key for job in batch}
        names = [self.adapter(job.target, in_use) for job in batch]
        extra = {"adapter_names": names} if self.model is not self.base else {}
        width = max(len(job.prompt_ids) for job in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, job in enumerate(batch):
            input_ids[row, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids) :] = 1
            job.started = time.perf_counter()
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        generators = [seeded(job.seed) for job in batch]
        matchers = [grammar_matcher(job.grammar) for job in batch]
        eos = self.stop_tokens()
        with torch.inference_mode():
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            output = self.model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra
            )
            for _ in range(max(job.max_tokens for job in batch)):
                logits = output.logits[:, -1, :].float()
                chosen = [
                    choose(constrained(logits[row], matchers[row]), job, generators[row])
                    for row, job in enumerate(batch)
                ]
                for job, token, matcher in zip(batch, chosen, matchers, strict=True):
                    if job.finish_reason is None:
                        self.step(job, token, eos)
                        if matcher is not None and job.finish_reason is None:
                            matcher.accept_token(token)
                            if matcher.is_terminated():  # the grammar is complete: nothing may follow
                                self.end(job, "stop")
                if all(job.finish_reason is not None for job in batch):
                    break
                mask = torch.cat([mask, torch.ones((len(batch), 1), dtype=mask.dtype, device=self.device)], 1)
                positions = mask.sum(-1, keepdim=True) - 1
                output = self.model(
                    input_ids=torch.tensor(chosen, device=self.device).unsqueeze(1),
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=output.past_key_values,
                    use_cache=True,
                    **extra,
                )

    def stop_tokens(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.base.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return {token for token in ids if token is not None}

    def step(self, job: Job, token: int, eos: set[int]) -> None:
        """Add one token to a job: stream its text, end it on an end token, a stop string or its length."""
        if token in eos:
            self.end(job, "stop")
            return
        job.tokens.append(token)
        text = self.tokenizer.decode(job.tokens, skip_special_tokens=True)
        for stop in job.stop:
            cut = text.find(stop)
            if cut >= 0:
                job.text = text[:cut]
                self.end(job, "stop")
                return
        job.text = text
        held = max((len(stop) - 1 for stop in job.stop), default=0)  # a stop string may be half-way out
        ready = len(text) - held if not text.endswith("\ufffd") else text.rfind("\ufffd")
        if job.on_text is not None and ready > job.sent:
            job.on_text(text[job.sent : ready])
            job.sent = ready
        if len(job.tokens) >= job.max_tokens:
            self.end(job, "length")

    def end(self, job: Job, reason: str) -> None:
        job.finish_reason = reason
        job.finished = time.perf_counter()
        if job.on_text is not None and job.error is None and len(job.text) > job.sent:
            job.on_text(job.text[job.sent :])
            job.sent = len(job.text)
        if job.on_done is not None:
            job.on_done()


def seeded(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def choose(logits: torch.Tensor, job: Job, generator: torch.Generator | None) -> int:
    """The next token: greedy at temperature 0, else sampled at the job's temperature within its top_p."""
    if job.temperature <= 0:
        return int(torch.argmax(logits))
    probabilities = torch.softmax(logits.cpu() / job.temperature, dim=-1)
    if job.top_p < 1.0:
        ordered, indices = torch.sort(probabilities, descending=True)
        outside = ordered.cumsum(-1) - ordered > job.top_p  # keep the smallest prefix reaching top_p
        ordered[outside] = 0.0
        probabilities = torch.zeros_like(probabilities).scatter(0, indices, ordered)
    return int(torch.multinomial(probabilities, 1, generator=generator))


def grammar_matcher(grammar: Any) -> Any:
    if grammar is None:
        return None
    import xgrammar

    return xgrammar.GrammarMatcher(grammar)


def constrained(logits: torch.Tensor, matcher: Any) -> torch.Tensor:
    """The row's logits with every token its grammar does not allow next masked out (xgrammar's bitmask)."""
    if matcher is None or matcher.is_terminated():
        return logits
    import xgrammar

    bitmask = xgrammar.allocate_token_bitmask(1, logits.shape[-1])
    matcher.fill_next_token_bitmask(bitmask)
    row = logits.cpu().unsqueeze(0)
    xgrammar.apply_token_bitmask_inplace(row, bitmask)
    return row[0]


class Grammars:
    """Compiled grammars for response_format, by schema text: compiling one takes about a second."""

    def __init__(self, tokenizer: Any, vocab_size: int, keep: int = 64) -> None:
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiler = xgrammar.GrammarCompiler(info)
        self.cache: OrderedDict[str, Any] = OrderedDict()
        self.keep = keep
        self.lock = threading.Lock()

    def get(self, schema: str | None) -> Any:
        """The grammar of a JSON Schema (its JSON text), or of any JSON object when None."""
        key = schema or ""
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        # compact JSON: with whitespace allowed anywhere a model can pad a reply until max_tokens runs out
        grammar = self.compiler.compile_json_schema(schema or '{"type": "object"}', any_whitespace=False)
        with self.lock:
            self.cache[key] = grammar
            while len(self.cache) > self.keep:
                self.cache.popitem(last=False)
        return grammar
