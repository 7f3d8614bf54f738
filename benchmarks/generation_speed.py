"""python benchmarks/generation_speed.py [--model REF] [--prompts 32] [--max-new-tokens 64]
[--batch-sizes 1 16] [--rounds 2] [--configs ...] [--gguf PATH] [--threads N] [--out X]

Greedy generation speed on the example task: the first --prompts chats of examples/support-tickets/test.jsonl
with their final assistant message dropped, each answered with at most --max-new-tokens new tokens, at every
--batch-sizes, four ways on CPU:

  plain      what a user writes by hand: AutoModelForCausalLM.from_pretrained(path) (fp32, the default),
             tokenizer.apply_chat_template(..., add_generation_prompt=True), the prompts in file order,
             batches of b left-padded (padding_side="left"), model.generate(do_sample=False,
             max_new_tokens=..., pad_token_id=...).
  hone       hone's evaluation generator, hone.evaluate.generate.generate_chat (prompts sorted by length so
             batches carry little padding, left padding, KV cache), on hone.models.resolve.load_model(path,
             dtype=torch.float32).
  hone+bf16  the same with bf16 weights and compute; run only where the CPU has native bf16 (AMX or
             AVX512-BF16, hone.hardware.cpu_bf16_native); emulated bf16 is ~15x slower than fp32.
  llama.cpp  llama-cpp-python (skipped with a note when not installed) on the GGUF the default model ships
             as (the Q4_1 file of the smollm2-135m-instruct alias; --gguf runs another, e.g. an f16 one):
             Llama(n_ctx=1024, n_threads=n_threads_batch=--threads, n_batch=512, seed=0), fed the prompt
             text rendered by the HF tokenizer's chat template (the same text as the others) through
             create_completion(text, max_tokens=..., temperature=0.0, top_k=1, repeat_penalty=1.0).
             llama-cpp-python has no batched generation API: at "batch b" it answers the b requests one
             after another, so its batch sizes differ only in name. Its Llama object keeps the previous
             request's KV cache and reuses the longest common token prefix, so the system prompt the
             chats share is evaluated once rather than per request (what a user of it gets; the others
             recompute every prompt).

Every configuration runs in this one process and loads its model once; each gets one warm-up generation (a
batch of the largest batch size) before timing. Timed: wall time of answering all prompts at one batch size
(chat rendering and tokenisation included), in rounds ordered a,b,c,d then d,c,b,a (each configuration runs
every batch size in turn) so drift in the machine's load hits all alike; the median over rounds is reported.
Generated tokens count every new token up to and including the first end-of-sequence token of each reply
(llama.cpp's usage leaves the stop token out; it is added back when a reply stopped on it). Reported per
configuration and batch size: wall seconds, generated tokens, generated tokens/s, requests/s, and the share of
replies identical (after stripping whitespace) to plain's at the same batch size: fp32 hone should match
exactly; bf16 and Q4_1 weights change some replies. Ratios are each configuration's tokens/s over plain's at
each batch size. --threads (default: all cores) sets torch.set_num_threads and llama.cpp's n_threads; on a
shared machine --threads 1 keeps other jobs from stalling every multi-threaded kernel (the numbers are then
single-core ones).

Full run, on a quiet machine:
  HONE_HOME=... python benchmarks/generation_speed.py --prompts 32 --max-new-tokens 64 --batch-sizes 1 16 \\
      --rounds 2 --out generation_speed.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
TEST_SPLIT = REPO / "examples" / "support-tickets" / "test.jsonl"
DEFAULT_MODEL = "smollm2-135m-instruct"
CONFIGS = ["plain", "hone", "hone+bf16", "llama.cpp"]
LLAMA_CONTEXT = 1024
LLAMA_BATCH = 512

Chat = list[dict[str, str]]


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # new tokens up to and including the first end-of-sequence token


# A configuration, once its model is loaded: (prompts, batch size) -> one completion per prompt, in order.
Generator = Callable[[Sequence[Chat], int], list[Completion]]


@dataclass
class Measurement:
    config: str
    batch_size: int
    round: int
    seconds: float
    tokens: int
    requests: int
    tokens_per_second: float
    requests_per_second: float


def load_prompts(path: Path, count: int) -> list[Chat]:
    """The first `count` chats of a JSONL file, each without its final assistant message."""
    prompts = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if len(prompts) == count:
                break
            messages = json.loads(line)["messages"]
            if messages and messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            prompts.append(messages)
    return prompts


def up_to_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    if eos_id is not None and eos_id in tokens:
        return tokens[: tokens.index(eos_id) + 1]
    return tokens


def plain_generator(model_path: Path, max_new_tokens: int) -> Generator:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(model_path)
    model.eval()

    def generate(prompts: Sequence[Chat], batch_size: int) -> list[Completion]:
        completions = []
        for start in range(0, len(prompts), batch_size):
            texts = [
                tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
                for chat in prompts[start : start + batch_size]
            ]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            output = model.generate(
                **inputs, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id
            )
            width = inputs["input_ids"].shape[1]
            for row in output[:, width:].tolist():
                new_tokens = up_to_eos(row, tokenizer.eos_token_id)
                text = tokenizer.decode(new_tokens, skip_special_tokens=True)
                completions.append(Completion(text, len(new_tokens)))
        return completions

    return generate


def hone_generator(model_path: Path, max_new_tokens: int, dtype: torch.dtype) -> Generator:
    from hone.evaluate.generate import generate_chat
    from hone.models.resolve import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, dtype=dtype)

    def generate(prompts: Sequence[Chat], batch_size: int) -> list[Completion]:
        generations = generate_chat(model, tokenizer, prompts, max_new_tokens, batch_size)
        return [Completion(g.text, g.completion_tokens) for g in generations]

    return generate


def llama_generator(gguf: Path, model_path: Path, max_new_tokens: int, threads: int) -> Generator:
    """llama-cpp-python answering one request at a time, whatever the batch size."""
    import llama_cpp
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)  # only its chat template: the same text as plain
    llm = llama_cpp.Llama(
        model_path=str(gguf),
        n_ctx=LLAMA_CONTEXT,
        n_threads=threads,
        n_threads_batch=threads,  # prompt processing; left unset it takes every core
        n_batch=LLAMA_BATCH,
        verbose=False,
        seed=0,
    )

    def generate(prompts: Sequence[Chat], batch_size: int) -> list[Completion]:
        completions = []
        for chat in prompts:
            text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            answer = llm.create_completion(
                text, max_tokens=max_new_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0
            )
            choice = answer["choices"][0]
            stopped_on_eos = choice["finish_reason"] == "stop"  # no stop strings are given
            tokens = answer["usage"]["completion_tokens"] + int(stopped_on_eos)
            completions.append(Completion(choice["text"], tokens))
        return completions

    return generate


def available_configs(requested: Sequence[str], gguf: Path | None) -> tuple[list[str], list[str]]:
    """The requested configurations this machine can run, and a note for each one it cannot."""
    from hone.hardware import cpu_bf16_native

    runnable, notes = [], []
    for name in requested:
        if name == "hone+bf16" and cpu_bf16_native() is None:
            notes.append("hone+bf16 skipped: this CPU has no AMX or AVX512-BF16 (bf16 would be emulated)")
        elif name == "llama.cpp" and importlib.util.find_spec("llama_cpp") is None:
            notes.append(
                "llama.cpp skipped: llama-cpp-python is not installed (pip install llama-cpp-python)"
            )
        elif name == "llama.cpp" and gguf is None:
            notes.append("llama.cpp skipped: no GGUF for this model; pass --gguf PATH")
        else:
            runnable.append(name)
    return runnable, notes


def default_gguf(model: str) -> Path | None:
    from hone.models.resolve import ALIASES

    if model in ALIASES:
        return ALIASES[model].locate()
    if model.endswith(".gguf"):
        return Path(model)
    return None


def build_generator(
    name: str, model_path: Path, gguf: Path | None, max_new_tokens: int, threads: int
) -> Generator:
    if name == "plain":
        return plain_generator(model_path, max_new_tokens)
    if name in ("hone", "hone+bf16"):
        dtype = torch.bfloat16 if name == "hone+bf16" else torch.float32
        return hone_generator(model_path, max_new_tokens, dtype)
    if gguf is None:
        raise SystemExit("llama.cpp needs a GGUF file: pass --gguf PATH")
    return llama_generator(gguf, model_path, max_new_tokens, threads)


def measure(
    name: str, generate: Generator, prompts: Sequence[Chat], batch_size: int, number: int
) -> tuple[Measurement, list[Completion]]:
    began = time.perf_counter()
    completions = generate(prompts, batch_size)
    seconds = time.perf_counter() - began
    tokens = sum(c.tokens for c in completions)
    result = Measurement(
        name, batch_size, number, seconds, tokens, len(prompts), tokens / seconds, len(prompts) / seconds
    )
    return result, completions


def agreement(completions: Sequence[Completion], reference: Sequence[Completion]) -> float:
    """Share of completions whose text equals the reference's, whitespace stripped."""
    same = sum(a.text.strip() == b.text.strip() for a, b in zip(completions, reference, strict=True))
    return same / len(reference)


def summarize(
    runs: Sequence[Measurement], texts: dict[tuple[str, int], list[Completion]]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Medians over rounds per (configuration, batch size), and each one's tokens/s over plain's."""
    medians: dict[str, dict[str, Any]] = {}
    for name, batch_size in texts:
        mine = [r for r in runs if r.config == name and r.batch_size == batch_size]
        reference = texts.get(("plain", batch_size))
        medians.setdefault(name, {})[str(batch_size)] = {
            "seconds": statistics.median(r.seconds for r in mine),
            "tokens": statistics.median(r.tokens for r in mine),
            "requests": mine[0].requests,
            "tokens_per_second": statistics.median(r.tokens_per_second for r in mine),
            "requests_per_second": statistics.median(r.requests_per_second for r in mine),
            "agreement_with_plain": agreement(texts[name, batch_size], reference) if reference else None,
        }
    ratios: dict[str, dict[str, float]] = {}
    if "plain" in medians:
        for name, by_batch in medians.items():
            if name == "plain":
                continue
            ratios[f"{name}/plain"] = {
                batch: median["tokens_per_second"] / medians["plain"][batch]["tokens_per_second"]
                for batch, median in by_batch.items()
            }
    return medians, ratios


def markdown(medians: dict[str, dict[str, Any]], ratios: dict[str, dict[str, float]]) -> str:
    lines = [
        "| configuration | batch | wall s | generated tokens | tokens/s | requests/s | same as plain |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_batch in medians.items():
        for batch, m in by_batch.items():
            shown = f"{batch} (one by one)" if name == "llama.cpp" else batch
            same = "-" if m["agreement_with_plain"] is None else f"{m['agreement_with_plain']:.0%}"
            lines.append(
                f"| {name} | {shown} | {m['seconds']:.2f} | {m['tokens']:.0f} | "
                f"{m['tokens_per_second']:.1f} | {m['requests_per_second']:.2f} | {same} |"
            )
    if ratios:
        lines.append("")
    for pair, by_batch in ratios.items():
        shown = ", ".join(f"batch {batch} {ratio:.2f}x" for batch, ratio in by_batch.items())
        lines.append(f"{pair} tokens/s: {shown}")
    if "llama.cpp" in medians:
        lines += ["", "llama.cpp: llama-cpp-python has no batched API; its requests run one after another."]
    return "\n".join(lines)


def machine(configs: Sequence[str]) -> dict[str, Any]:
    import transformers

    from hone.hardware import cpu_bf16_native, cpu_name

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if "llama.cpp" in configs:
        import llama_cpp

        versions["llama_cpp_python"] = llama_cpp.__version__
        versions["llama_cpp_system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    return {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_native_bf16": cpu_bf16_native(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
    }


def write_json_atomically(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="any hone model reference")
    parser.add_argument("--prompts", type=int, default=32, help="first N chats of the test split")
    parser.add_argument("--test", type=Path, default=TEST_SPLIT, help="JSONL file of chats")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=2, help="rounds; odd rounds run the order reversed")
    parser.add_argument(
        "--configs", nargs="+", default=CONFIGS, choices=CONFIGS, metavar="NAME", help=", ".join(CONFIGS)
    )
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF for llama.cpp (the alias's file)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="(all cores)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.prompts < 1 or args.max_new_tokens < 1 or args.rounds < 1 or min(args.batch_sizes) < 1:
        parser.error("--prompts, --max-new-tokens, --rounds and every batch size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    from hone.models.resolve import resolve_model

    torch.set_num_threads(args.threads)
    gguf = args.gguf or default_gguf(args.model)
    configs, notes = available_configs(args.configs, gguf)
    for note in notes:
        print(note, flush=True)
    prompts = load_prompts(args.test, args.prompts)
    model_path = resolve_model(args.model)
    generators = {
        name: build_generator(name, model_path, gguf, args.max_new_tokens, args.threads) for name in configs
    }
    warm_up = prompts[: max(args.batch_sizes)]
    for generate in generators.values():
        generate(warm_up, max(args.batch_sizes))

    runs: list[Measurement] = []
    texts: dict[tuple[str, int], list[Completion]] = {}
    order: list[str] = []
    for number in range(args.rounds):
        for name in configs if number % 2 == 0 else reversed(configs):
            order.append(name)
            for batch_size in args.batch_sizes:
                result, completions = measure(name, generators[name], prompts, batch_size, number)
                runs.append(result)
                texts.setdefault((name, batch_size), completions)
                print(
                    f"round {number + 1} {name} batch {batch_size}: {result.seconds:.2f} s, "
                    f"{result.tokens} tokens, {result.tokens_per_second:.1f} tokens/s",
                    flush=True,
                )
    medians, ratios = summarize(runs, texts)
    print(
        f"\nmodel={args.model} prompts={len(prompts)} max_new_tokens={args.max_new_tokens} "
        f"rounds={args.rounds} threads={args.threads}\n"
    )
    print(markdown(medians, ratios))
    report = {
        "command": " ".join(["python", "benchmarks/generation_speed.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(configs),
        "settings": {
            "model": args.model,
            "model_path": str(model_path),
            "gguf": str(gguf) if "llama.cpp" in configs else None,
            "prompts": len(prompts),
            "max_new_tokens": args.max_new_tokens,
            "batch_sizes": args.batch_sizes,
            "rounds": args.rounds,
            "threads": args.threads,
            "configs": configs,
            "skipped": notes,
        },
        "order": order,
        "runs": [asdict(r) for r in runs],
        "median": medians,
        "ratios": ratios,
    }
    if args.out:
        write_json_atomically(args.out, report)
    return report


if __name__ == "__main__":
    main()
