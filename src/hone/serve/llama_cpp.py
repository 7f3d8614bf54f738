"""The llama.cpp engine: GGUF files on CPU, in this process, one request at a time.

Every model a request names (the base, or an adapter over it) is served from a GGUF file that hone makes
with its own export code the first time it is asked for: the adapter merged into the base, converted by
llama.cpp's converter, quantized to `serve.llama_cpp.quant`. The file is cached under hone's home, keyed by
the adapter's content, the base and the quantization, so a restart or a second server loads it without
converting again. The base and up to `serve.max_adapters` adapters' models stay loaded (`llama_cpp.Llama`
instances, each with its own KV cache); beyond that the least recently used is closed.

llama-cpp-python has no batched API, so one engine thread decodes the queued requests one after another.
Its C++ decode loop is still faster than the transformers engine for one request on a CPU
(benchmarks/RESULTS.md), and each model's KV cache keeps the start of its last prompt (the chat template
and system prompt), so a request evaluates only the rest of its own.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import queue
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from hone.config import LlamaCppSettings
from hone.errors import HoneError
from hone.export.gguf import model_command
from hone.export.llama_cpp import LLAMA_CPP_PYTHON, llama_cpp_tools, run_tools
from hone.export.merge import merge
from hone.io import atomic_write_json, file_digest, staged_folder
from hone.models.resolve import hone_home
from hone.runs import MANIFEST
from hone.serve.engine import Detokenizer, Job, QueueFull, add_token, end_job
from hone.serve.models import BASE, Target

logger = logging.getLogger(__name__)

MODEL_FILE = "model.gguf"
QUANTIZED = ("Q4_K_M", "Q4_1")  # quantized here from the converter's F16; it writes F16 and Q8_0 itself


class LlamaCppEngine:
    def __init__(
        self,
        base: Path,
        base_name: str,
        tokenizer: Any,
        settings: LlamaCppSettings,
        max_adapters: int = 8,
        max_queue: int = 64,
    ) -> None:
        self.tokenizer = tokenizer
        self.base_folder = base
        self.settings = settings
        self.threads = settings.threads or default_threads()
        self.max_adapters = max_adapters
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.made: list[str] = []  # models this engine had to convert: the cache had no GGUF for them
        self.base_key = folder_stamp(base)
        self.base = self.open(self.gguf(Target(BASE, base_name)))
        self.adapters: OrderedDict[str, Any] = OrderedDict()  # target key -> its Llama, LRU order
        self.grammars: OrderedDict[str, Any] = OrderedDict()
        self.grammar_lock = threading.Lock()
        self.running = False
        self.thread: threading.Thread | None = None

    # Lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self.thread = threading.Thread(target=self.loop, name="hone-llama-cpp", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish what is queued, stop the engine thread, then free the models: one left to the garbage
        collector is freed at interpreter exit, after the modules its destructor calls, with a traceback."""
        self.running = False
        if self.thread is not None:
            self.thread.join(timeout=timeout)
            if self.thread.is_alive():
                return  # a decode still runs: its model must not be freed under it
        for llama in [self.base, *self.adapters.values()]:
            llama.close()
        self.adapters.clear()

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
                job = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                self.run(job)
            except Exception as exc:  # one failed request (a conversion, a decode) never stops the server
                logger.exception("generation failed")
                if job.finish_reason is None:
                    job.error = f"{type(exc).__name__}: {exc}"
                    end_job(job, "error")

    # Grammars ------------------------------------------------------------------------------------------

    def compile(self, schema: str | None) -> Any:
        """llama.cpp's grammar of a JSON Schema's text (any JSON object when None), parsed once against the
        vocabulary here: a grammar llama.cpp cannot parse would otherwise crash the decode that uses it."""
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        key = schema or ""
        with self.grammar_lock:
            if key in self.grammars:
                self.grammars.move_to_end(key)
                return self.grammars[key]
        grammar = LlamaGrammar.from_json_schema(schema or '{"type": "object"}', verbose=False)
        vocab = self.base._model.vocab  # llama-cpp-python's own completions reach it the same way
        text, root = grammar._grammar.encode(), grammar._root.encode()
        parsed = llama_cpp.llama_sampler_init_grammar(vocab, text, root)
        if not parsed:
            raise ValueError("llama.cpp cannot parse the grammar made from it")
        llama_cpp.llama_sampler_free(parsed)
        with self.grammar_lock:
            self.grammars[key] = grammar
            while len(self.grammars) > 64:
                self.grammars.popitem(last=False)
        return grammar

    # Models --------------------------------------------------------------------------------------------

    def model(self, target: Target) -> Any:
        """The target's loaded Llama: the base, or its adapter's merged model (made or loaded if need be)."""
        if target.adapter is None:
            return self.base
        if target.key in self.adapters:
            self.adapters.move_to_end(target.key)
            return self.adapters[target.key]
        llama = self.open(self.gguf(target))
        while len(self.adapters) >= self.max_adapters:
            key, dropped = self.adapters.popitem(last=False)
            dropped.close()
            logger.info("closed %s (serve.max_adapters: %d)", key, self.max_adapters)
        self.adapters[target.key] = llama
        return llama

    def gguf(self, target: Target) -> Path:
        """The target's GGUF file from hone's cache; on a miss merged, converted and quantized into it."""
        quant = self.settings.quant
        key = self.base_key if target.adapter is None else content_key(target.adapter, self.base_key)
        folder = hone_home() / "serve" / "gguf" / f"{key[:32]}-{quant.lower()}"
        if (folder / MODEL_FILE).is_file():
            return folder / MODEL_FILE
        logger.info("making the %s GGUF of %s (once; cached in %s)", quant, target.label, folder)
        began = time.perf_counter()
        with staged_folder(folder) as staging:  # a conversion that fails or is killed leaves no file here
            source = self.base_folder
            if target.adapter is not None:
                # dequantize=True: a QLoRA adapter belongs on the dequantized 4-bit base it was trained on
                run = run_folder(target.adapter)
                source = merge(run, staging / "merged", dequantize=True, record=False)
            make_gguf(source, staging / MODEL_FILE, quant, self.threads, target.label)
            shutil.rmtree(staging / "merged", ignore_errors=True)
            atomic_write_json(
                staging / "source.json",
                {"model": target.label, "key": target.key, "base": str(self.base_folder), "quant": quant,
                 "converter": f"llama-cpp-python {LLAMA_CPP_PYTHON}"},
            )  # fmt: skip
        logger.info("made %s in %.1f s", folder / MODEL_FILE, time.perf_counter() - began)
        self.made.append(target.label)
        return folder / MODEL_FILE

    def open(self, model: Path) -> Any:
        from llama_cpp import Llama

        llama = Llama(
            model_path=str(model),
            n_ctx=self.settings.context,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            n_gpu_layers=0,
            verbose=False,
        )
        check_vocabulary(llama, self.tokenizer, model)
        return llama

    # Decoding ------------------------------------------------------------------------------------------

    def run(self, job: Job) -> None:
        """Decode one job. Its prompt goes in as the HF tokenizer's ids, as the transformers engine sends
        them: the converter writes the GGUF's vocabulary id for id from that tokenizer (check_vocabulary),
        while llama.cpp's own tokenizer could split the chat template's text otherwise, giving the model a
        prompt it was not trained on and a prompt_tokens count that differs from the ids it read."""
        import llama_cpp

        job.started = time.perf_counter()
        llama = self.model(job.target)
        room = self.settings.context - len(job.prompt_ids)
        if room < 1:
            raise HoneError(
                f"the prompt has {len(job.prompt_ids)} tokens; serve.llama_cpp.context allows "
                f"{self.settings.context} for prompt and reply together"
            )
        limit = min(job.max_tokens, room)
        llama.set_seed(job.seed if job.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)  # default: random
        vocab = llama._model.vocab
        stops = {self.tokenizer.eos_token_id, llama.token_eos()}
        text = Detokenizer()  # the transformers engine's, so both engines write the same text for a reply
        # top_k 0 and min_p 0 switch those samplers off: a request's temperature and top_p alone decide,
        # as in the transformers engine (temperature 0 is greedy)
        sampling = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0, "top_p": job.top_p}
        tokens = llama.generate(
            job.prompt_ids, temp=max(job.temperature, 0.0), grammar=job.grammar, **sampling
        )
        try:
            for token in tokens:
                if token in stops or llama_cpp.llama_vocab_is_eog(vocab, token):
                    end_job(job, "stop")
                else:
                    add_token(job, token, self.tokenizer, text, limit)
                if job.finish_reason is not None:
                    break
        except Exception:
            llama.reset()  # the KV cache may hold a half-evaluated step: the next request starts clean
            raise
        finally:
            tokens.close()


def default_threads() -> int:
    """As many threads as torch uses (the physical cores); llama-cpp-python's own default is half the
    logical CPUs, one thread on a 2-core machine."""
    import torch

    return torch.get_num_threads()


def folder_stamp(folder: Path) -> str:
    """The base model's files by name, size and modification time: reading a base of many GB through
    sha256 on every start would cost more than the conversion it saves."""
    digest = hashlib.sha256(f"llama-cpp-python {LLAMA_CPP_PYTHON}\n".encode())
    for file in sorted(path for path in folder.rglob("*") if path.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def content_key(adapter: Path, base_key: str) -> str:
    """An adapter's files by content, over the base they are merged into."""
    digest = hashlib.sha256(f"{base_key}\n".encode())
    for file in sorted(path for path in adapter.rglob("*") if path.is_file()):
        digest.update(f"{file.relative_to(adapter).as_posix()}\0{file_digest(file)}\n".encode())
    return digest.hexdigest()


def run_folder(adapter: Path) -> Path:
    """The run (or registered version) folder an adapter belongs to: merging reads its manifest."""
    for folder in adapter.resolve().parents:
        if (folder / MANIFEST).is_file():
            return folder
    raise HoneError(f"{adapter}: no run folder ({MANIFEST}) above it; only a run's adapter can be merged")


def make_gguf(source: Path, out: Path, quant: str, threads: int, name: str) -> None:
    """A Hugging Face folder as a GGUF of `quant`. llama-cpp-python carries llama.cpp's quantizer, so the
    k-quants need no llama-quantize program here, unlike `hone export --gguf`."""
    converted = out.with_name("f16.gguf") if quant in QUANTIZED else out
    # model_command has the converter write the F16 that a quantized type starts from
    run_tools(
        {"convert_hf_to_gguf.py": model_command(llama_cpp_tools(), source, converted, quant.lower(), name)}
    )
    if quant in QUANTIZED:
        quantize(converted, out, quant, threads)
        converted.unlink()


def quantize(half: Path, out: Path, quant: str, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = threads
    code = llama_cpp.llama_model_quantize(str(half).encode(), str(out).encode(), ctypes.byref(params))
    if code != 0:
        raise HoneError(f"llama.cpp could not quantize {half} to {quant} (error {code})")


def check_vocabulary(llama: Any, tokenizer: Any, model: Path) -> None:
    """The GGUF reads the tokenizer's ids as the same tokens: prompts are sent as those ids."""
    if llama.n_vocab() < len(tokenizer):
        raise HoneError(f"{model}: {llama.n_vocab()} tokens, fewer than the tokenizer's {len(tokenizer)}")
    for token in tokenizer.all_special_ids:
        read = llama.detokenize([token], special=True).decode(errors="replace")
        if read != tokenizer.convert_ids_to_tokens(token):
            raise HoneError(
                f"{model}: token {token} is {read!r}, not the tokenizer's "
                f"{tokenizer.convert_ids_to_tokens(token)!r}; the GGUF has another vocabulary"
            )
