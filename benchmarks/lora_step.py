"""python benchmarks/lora_step.py [--model REF] [--steps 4] [--rounds 2] [--batch 8] [--variants ...] [--json]

hone's LoRA SFT step with each of its optimisations switched off on its own, A/B interleaved in one process:
the same model, the same batch (the first --batch chats of the example task, padded to the longest),
LoRA r=16 / alpha 32 / dropout 0.05 on every linear layer, AdamW, and the same seed before every step (so
every variant draws the same dropout masks where it uses the same dropout).

  hone            everything on: bf16 weights and autocast where the CPU has AMX or AVX512-BF16 (else
                  fp32), the LM head and its cross-entropy only on labelled positions, in chunks, the
                  softmax and its gradient compiled (hone.train.loss.linear_cross_entropy), and every
                  kernel of hone.train.cpu (`cpu_kernels`, as `hone train` applies them): the LoRA
                  dropout drawn by a compiled SplitMix64 kernel and applied to the input's bits
                  (fast_dropout), each frozen base layer and its adapter one autograd node with the
                  adapter added in place (fused_lora), grouped-head attention (attention), the rotary
                  embedding written half by half (rotary), and RMSNorm and SwiGLU compiled into fused
                  kernels (compiled_ops; compiled in the untimed warm-up step, reported separately).
  span-logits     the model's own head from the first labelled position on, then the cross-entropy there
                  (hone's previous loss; every position after the first labelled one gets logits).
  full-logits     the model's own loss (logits for every position): what transformers does by default.
  torch-dropout   PEFT's nn.Dropout (torch.bernoulli_, boolean masks): fast_dropout off.
  peft-forward    PEFT's LoRA forward (result + B(A(x)) * scaling), its input not copied to fp32 (fused_lora
                  off).
  fp32-copies     PEFT's LoRA forward as it is: every adapter's input copied to fp32, autocast copies it back.
  sdpa-attention  transformers' default attention: torch's scaled_dot_product_attention (flash on CPU).
  eager-attention transformers' eager attention (repeated key/value heads, fp32 softmax).
  eager-layers    transformers' RMSNorm and MLP modules as they are (not compiled): compiled_ops off.
  eager-rotary    transformers' rotary embedding (q * cos + rotate_half(q) * sin) instead of hone's.
  kernels-off     every kernel of hone.train.cpu off (train.cpu_kernels: off): transformers' and PEFT's
                  own layers with sdpa, hone's loss and precision kept.
  fp32            fp32 weights and compute, every other optimisation on.
  hone+compile    hone with the model wrapped in torch.compile (inductor); not run unless asked for
                  (--variants); its compilation happens in the untimed warm-up step, reported separately.

Each round times --steps steps of every variant in turn (order reversed every other round); the median
over rounds is reported, with hone's speed over each variant's and the loss of each variant's last step
(the three loss variants compute the same loss).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from peft.helpers import disable_input_dtype_casting

from hone.data.load import load_split
from hone.data.tokenize import IGNORE_INDEX, tokenize_chat
from hone.hardware import cpu_bf16_native
from hone.models.resolve import load_model, load_tokenizer, resolve_model
from hone.models.templates import training_chat_template
from hone.train.cpu import KERNELS, cpu_kernels
from hone.train.loss import label_span, shifted_targets, sum_cross_entropy
from hone.train.trainer import labelled_loss

TRAIN = Path(__file__).resolve().parent.parent / "examples" / "support-tickets" / "train.jsonl"
SEED = 42


@dataclass(frozen=True)
class Variant:
    loss: str = "labelled"  # labelled | span | full
    off: tuple[str, ...] = ()  # kernels of hone.train.cpu switched off (names of KERNELS)
    skip_fp32_copies: bool = True
    attention: str = "sdpa"  # transformers' attention where hone's ("attention") is off: sdpa | eager
    bf16: bool = True  # where the CPU has native bf16
    compiled: bool = False


VARIANTS = {
    "hone": Variant(),
    "span-logits": Variant(loss="span"),
    "full-logits": Variant(loss="full"),
    "torch-dropout": Variant(off=("fast_dropout",)),
    "peft-forward": Variant(off=("fused_lora",)),
    "fp32-copies": Variant(off=("fused_lora",), skip_fp32_copies=False),
    "sdpa-attention": Variant(off=("attention",)),
    "eager-attention": Variant(off=("attention",), attention="eager"),
    "eager-layers": Variant(off=("compiled_ops",)),
    "eager-rotary": Variant(off=("rotary",)),
    "kernels-off": Variant(off=tuple(KERNELS)),
    "fp32": Variant(bf16=False),
    "hone+compile": Variant(compiled=True),
}
DEFAULT_VARIANTS = [name for name in VARIANTS if name != "hone+compile"]


def example_batch(
    tokenizer: Any, size: int, path: Path = TRAIN
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    template = training_chat_template(tokenizer)
    rows = [
        tokenize_chat(tokenizer, e.messages, template, 384) for e in load_split(path, None, "auto")[:size]
    ]
    width = max(len(r.input_ids) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r.input_ids + [pad] * (width - len(r.input_ids)) for r in rows])
    labels = torch.tensor([r.labels + [IGNORE_INDEX] * (width - len(r.labels)) for r in rows])
    mask = torch.tensor([[1] * len(r.input_ids) + [0] * (width - len(r.input_ids)) for r in rows])
    return {"input_ids": input_ids, "attention_mask": mask}, labels


def lora_model(path: Path, dtype: torch.dtype) -> Any:
    torch.manual_seed(SEED)
    config = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return get_peft_model(load_model(path, dtype=dtype), config).train()


def span_loss(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor, skip_copies: bool) -> Any:
    """hone's previous loss: the model's own head from the first labelled position on."""
    first = label_span(labels)
    with disable_input_dtype_casting(model, active=skip_copies):
        logits = model(**inputs, logits_to_keep=torch.arange(first, labels.size(1) - 1)).logits
    total, count = sum_cross_entropy(logits, shifted_targets(labels, first))
    return total / count


COMPILED: dict[int, Any] = {}


def compiled_model(model: Any) -> Any:
    """One torch.compile wrapper per model, made on first use."""
    if id(model) not in COMPILED:
        COMPILED[id(model)] = torch.compile(model)
    return COMPILED[id(model)]


@contextlib.contextmanager
def configured(model: Any, v: Variant) -> Iterator[list[str]]:
    """The model with the variant's kernels (hone.train.cpu) and attention; yields the kernels applied."""
    before = model.get_base_model().config._attn_implementation
    model.set_attn_implementation(v.attention)  # where hone's attention is off
    try:
        with cpu_kernels(model, [name for name in KERNELS if name not in v.off]) as applied:
            yield applied
    finally:
        model.set_attn_implementation(before)


def step(
    model: Any, optimizer: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor, v: Variant
) -> float:
    torch.manual_seed(SEED)
    runner = compiled_model(model) if v.compiled else model
    half = next(model.parameters()).dtype == torch.bfloat16
    skip_copies = half and v.skip_fp32_copies
    with torch.autocast("cpu", dtype=torch.bfloat16) if half else contextlib.nullcontext():
        if v.loss == "full":
            with disable_input_dtype_casting(model, active=skip_copies):
                loss = runner(**inputs, labels=labels).loss
        elif v.loss == "span":
            loss = span_loss(model, inputs, labels, skip_copies)
        else:
            total, count, _ = labelled_loss(runner, inputs, labels, model, mixed_precision=skip_copies)
            loss = total / count
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def run(model_ref: str, variants: list[str], steps: int, rounds: int, batch: int) -> dict[str, Any]:
    path = resolve_model(model_ref)
    inputs, labels = example_batch(load_tokenizer(path), batch)
    native = cpu_bf16_native() is not None

    def dtype_of(name: str) -> torch.dtype:
        return torch.bfloat16 if native and VARIANTS[name].bf16 else torch.float32

    models = {dtype: lora_model(path, dtype) for dtype in {dtype_of(name) for name in variants}}
    optimizers = {  # learning rate 0: every step sees the same weights
        dtype: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.0)
        for dtype, m in models.items()
    }
    warm_up: dict[str, float] = {}
    kernels: dict[str, list[str]] = {}
    for name in variants:  # not timed with the rest: compilation happens here
        model = models[dtype_of(name)]
        with configured(model, VARIANTS[name]) as kernels[name]:
            began = time.perf_counter()
            step(model, optimizers[dtype_of(name)], inputs, labels, VARIANTS[name])
            warm_up[name] = time.perf_counter() - began
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, float] = {}
    for number in range(rounds):
        for name in variants if number % 2 == 0 else variants[::-1]:
            model = models[dtype_of(name)]
            with configured(model, VARIANTS[name]):
                began = time.perf_counter()
                for _ in range(steps):
                    losses[name] = step(model, optimizers[dtype_of(name)], inputs, labels, VARIANTS[name])
                seconds[name].append((time.perf_counter() - began) / steps)
    per_step = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "model": model_ref,
        "batch": list(inputs["input_ids"].shape),
        "tokens": int(inputs["attention_mask"].sum()),
        "labelled": int((labels[:, 1:] != IGNORE_INDEX).sum()),
        "threads": torch.get_num_threads(),
        "bf16": native,
        "seconds_per_step": per_step,
        "warm_up_seconds": warm_up,
        "kernels": kernels,
        "rounds": seconds,
        "loss": losses,
        "hone_speedup": {name: per_step[name] / per_step["hone"] for name in variants if "hone" in per_step},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    result = run(args.model, args.variants, args.steps, args.rounds, args.batch)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rows, width = result["batch"]
    print(
        f"model={result['model']} batch={rows}x{width} ({result['tokens']} tokens, "
        f"{result['labelled']} labelled) threads={result['threads']} bf16={result['bf16']}"
    )
    print(
        "| variant | s/step | tokens/s | hone's speed-up | loss | warm-up s |\n|---|---:|---:|---:|---:|---:|"
    )
    for name, per_step in result["seconds_per_step"].items():
        speedup = result["hone_speedup"].get(name)
        shown = f"{speedup:.2f}x" if speedup is not None else "-"
        tokens_per_second = result["tokens"] / per_step
        warm = result["warm_up_seconds"][name]
        loss = result["loss"][name]
        print(f"| {name} | {per_step:.2f} | {tokens_per_second:.0f} | {shown} | {loss:.4f} | {warm:.1f} |")


if __name__ == "__main__":
    main()
