"""The transformers engine: one base model in memory, many LoRA adapters over it, requests batched together.

Requests wait in a bounded queue; one engine thread decodes up to `serve.max_batch` of them together,
whatever adapter each asks for: PEFT applies each row's adapter in the same forward pass (`adapter_names`,
its mixed-adapter batches), and rows for the base model get none. Batching is continuous: between two
decoding steps, waiting requests are prefilled and join the batch in flight, and finished ones leave it,
so a short request is not held behind a long one. Adapters load on first use and the least recently used
one is dropped beyond `serve.max_adapters` (never one that a batch in flight is using).

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
from typing import Any, Protocol

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


class Detokenizer:
    """A job's new text one token at a time, without decoding all of it again at every step.

    The last few tokens are decoded with the new one and the text they gain is the new piece (the offsets
    vLLM and TGI keep): a token's text can depend on the one before it (a leading space, a multi-byte
    character split over tokens), and decoding the whole reply every step grows quadratically with it."""

    def __init__(self) -> None:
        self.prefix = 0  # tokens before this are out of the window
        self.read = 0  # tokens before this have given their text

    def add(self, tokenizer: Any, tokens: list[int]) -> str:
        seen = tokenizer.decode(tokens[self.prefix : self.read], skip_special_tokens=True)
        text = tokenizer.decode(tokens[self.prefix :], skip_special_tokens=True)
        if len(text) <= len(seen) or text.endswith("\ufffd"):  # nothing new yet, or half a character
            return ""
        self.prefix, self.read = self.read, len(tokens)
        return text[len(seen) :]


@dataclass
class Batch:
    """The jobs being decoded together, row by row: their KV cache, mask and the logits of their next
    token. Rows join (`merge`) and leave (`keep`) between steps, so a request never waits for a batch to
    finish before it starts, and a finished one never holds a row."""

    jobs: list[Job]
    names: list[str]  # each row's adapter (PEFT's name), BASE_ROW for none
    cache: Any  # the model's DynamicCache, rows in the order of `jobs`
    mask: torch.Tensor  # [rows, positions]: 1 where the cache holds a token of the row
    logits: torch.Tensor  # [rows, vocabulary]: of each row's next token
    generators: list[torch.Generator | None]
    matchers: list[Any]
    texts: list[Detokenizer]

    @property
    def joinable(self) -> bool:
        """Rows can join only a cache of plain growing layers (not sliding windows, not quantized)."""
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in getattr(self.cache, "layers", [None]))

    def advance(self, engine: TransformersEngine) -> list[int]:
        """Every row's next token, added to its job (which may end with it)."""
        eos = engine.stop_tokens()
        chosen = []
        for row, job in enumerate(self.jobs):
            matcher = self.matchers[row]
            token = choose(constrained(self.logits[row], matcher), job, self.generators[row])
            chosen.append(token)
            engine.step(job, token, eos, self.texts[row])
            if matcher is not None and job.finish_reason is None:
                matcher.accept_token(token)
                if matcher.is_terminated():  # the grammar is complete: nothing may follow
                    end_job(job, "stop")
        return chosen

    def forward(self, engine: TransformersEngine, tokens: list[int]) -> None:
        ones = torch.ones((len(self.jobs), 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], 1)
        output = engine.model(
            input_ids=torch.tensor(tokens, device=self.mask.device).unsqueeze(1),
            attention_mask=self.mask,
            position_ids=self.mask.sum(-1, keepdim=True) - 1,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
            **engine.adapter_rows(self.names),
        )
        self.cache, self.logits = output.cache, output.logits[:, -1, :].float()

    def keep(self, rows: list[int]) -> None:
        """Only these rows go on; positions no remaining row uses are cut from the front."""
        index = torch.tensor(rows, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.logits = self.mask[index], self.logits[index]
        for name in ("jobs", "names", "generators", "matchers", "texts"):
            setattr(self, name, [getattr(self, name)[row] for row in rows])
        first = int(self.mask.any(0).int().argmax())
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]

    def merge(self, other: Batch) -> Batch:
        """One batch of both: the shorter's cache and mask left-padded (masked out) to the longer's."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([left_pad(mine.keys, width), left_pad(theirs.keys, width)], 0)
            mine.values = torch.cat([left_pad(mine.values, width), left_pad(theirs.values, width)], 0)
        self.mask = torch.cat([left_pad(self.mask, width), left_pad(other.mask, width)], 0)
        self.logits = torch.cat([self.logits, other.logits], 0)
        for name in ("jobs", "names", "generators", "matchers", "texts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


def left_pad(values: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros before the positions (dimension -2 of a cache's [rows, heads, positions, dim], -1 of a mask)."""
    dim = -1 if values.dim() == 2 else -2
    missing = width - values.shape[dim]
    if missing == 0:
        return values
    shape = list(values.shape)
    shape[dim] = missing
    return torch.cat([values.new_zeros(shape), values], dim)


class Engine(Protocol):
    """What the HTTP side needs of an engine; `transformers` (here), `vllm` and `llama.cpp` provide it."""

    tokenizer: Any  # renders chat prompts and counts their tokens

    def start(self) -> None: ...

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the jobs in flight and queued, then stop."""

    def submit(self, job: Job) -> None:
        """Queue a job (its callbacks are then called from the engine's thread); QueueFull when full."""

    @property
    def depth(self) -> int:
        """Jobs waiting."""

    def compile(self, schema: str | None) -> Any:
        """What `Job.grammar` holds for a JSON Schema's text (any JSON object when None); may take a while,
        so it is called off the event loop."""


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
        self.batches = 0  # prefills: groups of requests that started together
        self.joined = 0  # requests that joined a batch already decoding
        self._grammars: Grammars | None = None

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

    def compile(self, schema: str | None) -> Any:
        """The xgrammar grammar of a response_format (compiler made on first use: it reads the vocabulary)."""
        if self._grammars is None:
            self._grammars = Grammars(self.tokenizer, self.base.get_output_embeddings().weight.shape[0])
        return self._grammars.get(schema)

    def loop(self) -> None:
        batch: Batch | None = None
        while self.running or not self.queue.empty() or batch is not None:
            try:
                batch = self.iterate(batch)
            except Exception as exc:  # a failed step fails the requests in it, never the server
                logger.exception("generation failed")
                for job in batch.jobs if batch is not None else []:
                    self.fail(job, exc)
                batch = None

    def iterate(self, batch: Batch | None) -> Batch | None:
        """One step of continuous batching: admit waiting jobs (a prefill of theirs joins the batch in
        flight), pick every row's next token, drop the rows that ended, and run the others one step on."""
        room = self.max_batch if batch is None else self.max_batch - len(batch.jobs) if batch.joinable else 0
        arrived = self.take(room, wait=batch is None)
        if arrived:
            try:
                joining = self.prefill(arrived, batch)
            except Exception as exc:  # the newcomers fail; the batch in flight goes on
                logger.exception("prefill failed")
                for job in arrived:
                    self.fail(job, exc)
                joining = None
            if joining is not None:
                if batch is not None:
                    self.joined += len(arrived)
                batch = joining if batch is None else batch.merge(joining)
        if batch is None:
            return None
        with torch.inference_mode():
            chosen = batch.advance(self)
            live = [row for row, job in enumerate(batch.jobs) if job.finish_reason is None]
            if not live:
                return None
            if len(live) < len(batch.jobs):
                batch.keep(live)
                chosen = [chosen[row] for row in live]
            batch.forward(self, chosen)
        return batch

    def take(self, room: int, wait: bool) -> list[Job]:
        """Up to `room` queued jobs; waits a little for the first only when nothing is in flight."""
        jobs: list[Job] = []
        while len(jobs) < room:
            try:
                jobs.append(self.queue.get(timeout=0.05) if wait and not jobs else self.queue.get_nowait())
            except queue.Empty:
                break
        return jobs

    def fail(self, job: Job, exc: Exception) -> None:
        if job.finish_reason is None:
            job.error = f"{type(exc).__name__}: {exc}"
            end_job(job, "error")

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

    def prefill(self, jobs: list[Job], flight: Batch | None) -> Batch:
        """The newcomers' prompts through the model together (left-padded): their KV cache and the logits
        of their first token, as a batch of their own that joins the one in flight."""
        self.batches += 1
        in_use = {job.target.key for job in jobs} | ({j.target.key for j in flight.jobs} if flight else set())
        names = [self.adapter(job.target, in_use) for job in jobs]
        width = max(len(job.prompt_ids) for job in jobs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(jobs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            input_ids[row, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids) :] = 1
            job.started = time.perf_counter()
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            output = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True,
                logits_to_keep=1,  # the last position only: all of them would be [rows, width, vocabulary]
                **self.adapter_rows(names),
            )
        return Batch(
            jobs,
            names,
            output.cache,
            mask,
            output.logits[:, -1, :].float(),
            [seeded(job.seed) for job in jobs],
            [grammar_matcher(job.grammar) for job in jobs],
            [Detokenizer() for _ in jobs],
        )

    def adapter_rows(self, names: list[str]) -> dict[str, Any]:
        return {"adapter_names": names} if self.model is not self.base else {}

    def stop_tokens(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.base.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return {token for token in ids if token is not None}

    def step(self, job: Job, token: int, eos: set[int], text: Detokenizer) -> None:
        """Add one token to a job, or end it on an end token."""
        if token in eos:
            end_job(job, "stop")
        else:
            add_token(job, token, self.tokenizer, text, job.max_tokens)


def add_token(job: Job, token: int, tokenizer: Any, text: Detokenizer, limit: int) -> None:
    """One token more: stream its text, end the job on a stop string or at `limit` tokens (every engine
    that decodes token by token, so they write the same text for the same tokens)."""
    job.tokens.append(token)
    before = len(job.text)
    job.text += text.add(tokenizer, job.tokens)
    longest = max((len(stop) for stop in job.stop), default=0)
    for stop in job.stop:  # only where the new text could have completed one
        cut = job.text.find(stop, max(0, before - longest))
        if cut >= 0:
            job.text = job.text[:cut]
            end_job(job, "stop")
            return
    ready = len(job.text) - max(longest - 1, 0)  # a stop string may be half-way out
    if job.on_text is not None and ready > job.sent:
        job.on_text(job.text[job.sent : ready])
        job.sent = ready
    if len(job.tokens) >= limit:
        end_job(job, "length")


def end_job(job: Job, reason: str) -> None:
    """The job has ended: the text held back goes out, then its end is signalled."""
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
