"""python benchmarks/train_throughput.py [--model REF] [--steps 10] [--rounds 2] [--configs ...] [--out X]

LoRA SFT of one model on the example task (examples/support-tickets train split) three ways, with the same
LoRA (r=16, alpha 32, dropout 0.05, all-linear), seed (42), optimizer (the Trainer's default AdamW), peak
learning rate (1e-3), schedule (cosine, 5% warm-up) and examples per step (--batch-size):

  trl-defaults  TRL's SFTTrainer + PEFT as a new user runs it: SFTConfig sets only output_dir, max_steps,
                per_device_train_batch_size, learning_rate, seed, eval_strategy="no" (this script computes
                the validation loss) and the schedule above. What TRL 1.16 then does by itself
                (trl/trainer/sft_config.py, base_config.py): bf16=True (autocast; the weights load in fp32
                from a path), gradient_checkpointing=True, packing=False, padding_free=False (batches padded
                to their longest row), max_length=1024, assistant_only_loss=False and completion_only_loss
                resolving to False for "messages" data, so the loss covers the whole chat (system prompt and
                ticket included: a different loss from the other two), logging_steps=10. Its loss goes
                through a fused LM head that also computes per-token entropy and top-1 accuracy for the
                logs, and scores every position in vocabulary tiles off CUDA (only labelled positions with
                Triton on CUDA). On a machine without a bf16 GPU transformers refuses bf16 unless
                use_cpu=True, so that is set there (its error message asks for it).
  trl-tuned     the same trainer tuned by hand for the machine: bf16 weights and autocast where bf16 is
                fast (CUDA; CPUs with AMX or AVX512-BF16), fp32 weights and compute on other CPUs (bf16 is
                emulated there, ~15x slower; the trl-tuned+fp32 variant forces fp32 anywhere);
                gradient checkpointing off; assistant_only_loss=True through hone's training chat template
                ({% generation %} markers, renders byte-identically to the model's own). Layout:
                padding_free on CUDA; padded on CPU, because without a varlen attention kernel the flattened
                batch gets one dense block-diagonal mask, quadratic in the whole batch's length (see the
                trl-tuned+padding-free and +packing variants).
  hone          `hone train` with configs/quickstart.yaml (these settings as overrides), through
                hone.train.pipeline.run_training with tracking and in-loop validation off, so hone's own
                choices: bf16 where it is fast (as trl-tuned; hone+fp32 forces fp32), no gradient
                checkpointing, batches drawn at random as the TRL runs do (hone+grouped-batches batches
                examples of similar length: train.group_by_length), on CPU each batch in one row without
                padding, attended per example (train.padding_free; hone+padded pads them), assistant-only
                labels, the LM head and its cross-entropy only on labelled positions in chunks
                (hone.train.loss), and on CPU the kernels of hone.train.cpu (train.cpu_kernels: auto): a
                cheaper LoRA dropout and each adapter added in place, grouped-head attention, the rotary
                embedding half by half and compiled RMSNorm/SwiGLU (hone+kernels-off: none of them).

Each configuration runs in a fresh process (peak memory is its own: peak RSS on CPU, the CUDA allocator's
peak on GPU), in rounds ordered a,b,c then c,b,a, so drift in the machine's load hits all alike; the median
over rounds is reported. Per run: non-padding ("trained") tokens/s and labelled tokens/s (tokens that carry
loss) over every step but the first (warm-up), seconds per step, peak memory, and the validation loss: the
mean cross-entropy over the assistant tokens of the validation split, computed here after training in the
same way for every configuration (fp32 on CPU, bf16 autocast on CUDA). Ratios are hone's trained tokens/s
over each other configuration's. On a CPU without native bf16, bf16 configurations run --steps-defaults
steps (3 unless given): compare their tokens/s, and their loss only as after fewer steps. Packed variants
(--configs, see VARIANTS) put more examples in a step: compare their tokens/s, not their loss. On a shared
machine, --threads 1 keeps other jobs from stalling every multi-threaded kernel; the numbers are then
single-core ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoConfig, TrainerCallback

from hone.hardware import cpu_bf16_native

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules, also when imported
from model_shapes import SHAPES, peak_flops, training_flops, write_random_model

REPO = Path(__file__).resolve().parent.parent
TASK = REPO / "examples" / "support-tickets"
QUICKSTART = REPO / "configs" / "quickstart.yaml"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
LEARNING_RATE = 1e-3
WARMUP_RATIO = 0.05
SCHEDULER = "cosine"
SEED = 42
MAX_LENGTH = 384  # hone's model.max_length in the quickstart; every example task chat is shorter
MAIN = ["trl-defaults", "trl-tuned", "hone"]


@dataclass(frozen=True)
class TrlRecipe:
    """SFTConfig choices beyond the shared ones; None leaves TRL's default."""

    bf16: bool | Literal["auto"] | None = None  # auto: where bf16 is fast (CUDA, CPUs with AMX/AVX512-BF16)
    gradient_checkpointing: bool | None = None
    assistant_only_loss: bool = False
    layout: Literal["auto", "padded", "padding_free", "packing"] | None = None  # None: TRL's (padded)
    dtype: Literal["auto", "float32"] | None = None  # auto: bf16 weights when bf16 is on; None: TRL's (fp32)
    attention: str | None = None  # transformers' attn_implementation; None: its default (sdpa)


DEFAULTS = TrlRecipe()
TUNED = TrlRecipe(
    bf16="auto", gradient_checkpointing=False, assistant_only_loss=True, layout="auto", dtype="auto"
)

# One change at a time against the main configurations, for --configs.
VARIANTS: dict[str, TrlRecipe | list[str]] = {
    "trl-defaults+fp32": replace(DEFAULTS, bf16=False),
    "trl-defaults+no-checkpointing": replace(DEFAULTS, gradient_checkpointing=False),
    "trl-tuned+fp32": replace(TUNED, bf16=False, dtype="float32"),
    "trl-tuned+checkpointing": replace(TUNED, gradient_checkpointing=True),
    "trl-tuned+whole-chat": replace(TUNED, assistant_only_loss=False),
    "trl-tuned+padded": replace(TUNED, layout="padded"),
    "trl-tuned+padding-free": replace(TUNED, layout="padding_free"),
    "trl-tuned+packing": replace(TUNED, layout="packing"),
    "trl-tuned+packing+flex": replace(TUNED, layout="packing", attention="flex_attention"),  # CUDA only
    "hone+packing": ["train.packing=true"],
    "hone+padded": ["train.padding_free=false"],
    "hone+kernels-off": ["train.cpu_kernels=off"],
    "hone+grouped-batches": ["train.group_by_length=true"],
    "hone+checkpointing": ["train.gradient_checkpointing=true"],
    "hone+bf16": ["train.precision=bf16"],
    "hone+fp32": ["train.precision=fp32"],
    "hone+sdpa": ["train.attention=sdpa"],
    "hone+packing+flex": ["train.packing=true", "train.attention=flex_attention"],  # CUDA only
}
RECIPES: dict[str, TrlRecipe | list[str]] = {
    "trl-defaults": DEFAULTS,
    "trl-tuned": TUNED,
    "hone": [],
    **VARIANTS,
}


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def fast_bf16(on: str) -> bool:
    return on == "cuda" or cpu_bf16_native() is not None


def uses_bf16(recipe: TrlRecipe | list[str], on: str) -> bool:
    if isinstance(recipe, list):  # hone's own choice (hone.train.hardware.precision_choice) unless overridden
        return "train.precision=bf16" in recipe or (fast_bf16(on) and "train.precision=fp32" not in recipe)
    return recipe.bf16 is None or recipe.bf16 is True or (recipe.bf16 == "auto" and fast_bf16(on))


def peak_memory_mib(on: str) -> float:
    if on == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sequence_lengths(row: dict[str, Any]) -> list[int]:
    """The examples in one stored row: several where it is packed (TRL's seq_lengths, or position ids that
    restart at 0), else one."""
    if "seq_lengths" in row:
        return [int(n) for n in row["seq_lengths"]]
    if "position_ids" in row:
        starts = [i for i, position in enumerate(row["position_ids"]) if position == 0]
        ends = [*starts[1:], len(row["position_ids"])]
        return [end - start for start, end in zip(starts, ends, strict=True)]
    return [len(row["input_ids"])]


def batch_counts(rows: list[dict[str, Any]], batch: dict[str, Any]) -> dict[str, int]:
    """Tokens of one collated batch: non-padding (the rows as stored), labelled (positions whose next token
    carries loss, which is what the loss averages over), positions the model runs (padding included), and
    the (query, key) pairs causal attention computes within its examples (for model FLOPs)."""
    labels = batch["labels"]
    lengths = [n for row in rows for n in sequence_lengths(row)]
    return {
        "tokens": sum(len(row["input_ids"]) for row in rows),
        "labelled": int((labels[:, 1:] != -100).sum()),
        "positions": int(batch["input_ids"].numel()),
        "attention_pairs": sum(n * (n + 1) // 2 for n in lengths),
    }


class StepMeter(TrainerCallback):
    """Times every optimizer step and counts the tokens of its batch, whatever trainer and collator run.

    The train dataloader's collate function is wrapped as training begins, so batches are counted in the
    order they are fetched; the loader may fetch ahead, and step k still trained on batch k.
    """

    def __init__(self, on: str) -> None:
        self.on = on
        self.batches: list[dict[str, int]] = []
        self.step_ends: list[float] = []
        self.model: Any = None
        self.peak_mib = 0.0
        self.effective: dict[str, Any] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # accelerate's adapter iterates the DataLoader it wraps: its collate function is the one called
        loader = getattr(kwargs["train_dataloader"], "base_dataloader", kwargs["train_dataloader"])
        collate = loader.collate_fn

        def counting(rows: list[dict[str, Any]]) -> dict[str, Any]:
            batch = collate(rows)
            self.batches.append(batch_counts(rows, batch))
            return batch

        loader.collate_fn = counting
        model = kwargs["model"]
        self.effective = {
            "bf16": bool(args.bf16),
            "gradient_checkpointing": bool(args.gradient_checkpointing),
            "weights": str(next(model.parameters()).dtype).removeprefix("torch."),
            "attention": getattr(model.config, "_attn_implementation", None),
            "logging_steps": args.logging_steps,
            "optimizer": str(getattr(args.optim, "value", args.optim)),
            "threads": torch.get_num_threads(),
        }
        self.step_ends.append(time.perf_counter())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.on == "cuda":
            torch.cuda.synchronize()
        self.step_ends.append(time.perf_counter())

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.model = kwargs["model"]
        self.peak_mib = peak_memory_mib(self.on)


def tokenized(tokenizer: Any, examples: list[Any]) -> list[Any]:
    from hone.data.tokenize import tokenize_chat
    from hone.models.templates import training_chat_template

    template = training_chat_template(tokenizer)
    if template is None:
        raise SystemExit("the model's chat template has no training-compatible copy: no assistant-only loss")
    return [tokenize_chat(tokenizer, e.messages, template, MAX_LENGTH) for e in examples]


def right_pad(values: list[int], width: int, fill: int) -> list[int]:
    return values + [fill] * (width - len(values))


def validation_loss(model: Any, tokenizer: Any, examples: list[Any], on: str, batch_size: int = 8) -> float:
    """Mean cross-entropy over every assistant token of the examples (one mean over all their tokens)."""
    from hone.train.loss import label_span, shifted_targets, sum_cross_entropy

    rows = tokenized(tokenizer, examples)
    target = next(model.parameters()).device
    total, count = 0.0, 0
    if on == "cpu":
        model.float()  # a model trained with bf16 weights is scored in fp32 like the others
    model.eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on == "cuda" else nullcontext()
    with torch.no_grad(), autocast:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            width = max(len(r.input_ids) for r in chunk)
            input_ids = torch.tensor([right_pad(r.input_ids, width, tokenizer.pad_token_id) for r in chunk])
            labels = torch.tensor([right_pad(r.labels, width, -100) for r in chunk])
            mask = torch.tensor([right_pad([1] * len(r.input_ids), width, 0) for r in chunk])
            first = label_span(labels)
            logits = model(
                input_ids=input_ids.to(target),
                attention_mask=mask.to(target),
                use_cache=False,
                logits_to_keep=torch.arange(first, width - 1, device=target),
            ).logits
            summed, labelled = sum_cross_entropy(logits, shifted_targets(labels, first))
            total += float(summed)
            count += int(labelled)
    return total / max(count, 1)


def run_trl(spec: dict[str, Any], recipe: TrlRecipe, meter: StepMeter) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from hone.data.load import load_split
    from hone.models.resolve import load_tokenizer
    from hone.models.templates import training_chat_template

    on = spec["device"]
    options: dict[str, Any] = {}
    if recipe.bf16 is not None:
        options["bf16"] = fast_bf16(on) if recipe.bf16 == "auto" else recipe.bf16
    if on == "cpu" and options.get("bf16", True):
        options["use_cpu"] = True  # transformers refuses bf16 on a machine without a bf16 GPU otherwise
    if recipe.gradient_checkpointing is not None:
        options["gradient_checkpointing"] = recipe.gradient_checkpointing
    if recipe.dtype is not None:
        half = recipe.dtype == "auto" and options.get("bf16", True)
        options["model_init_kwargs"] = {"dtype": "bfloat16" if half else "float32"}
    if recipe.attention is not None:
        options.setdefault("model_init_kwargs", {})["attn_implementation"] = recipe.attention
    layout = recipe.layout
    if layout == "auto":
        layout = "padding_free" if on == "cuda" else "padded"
    if layout == "padding_free":  # TRL does not truncate without packing; every chat here is shorter
        options.update(padding_free=True, max_length=None)
    elif layout == "packing":
        options.update(packing=True, packing_strategy="bfd", max_length=MAX_LENGTH)
    elif layout == "padded":
        options["max_length"] = MAX_LENGTH
    processing_class = None
    if recipe.assistant_only_loss:
        processing_class = load_tokenizer(Path(spec["model_path"]))
        processing_class.chat_template = training_chat_template(processing_class)
        options["assistant_only_loss"] = True
    args = SFTConfig(
        output_dir=spec["folder"],
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch_size"],
        learning_rate=LEARNING_RATE,
        lr_scheduler_type=SCHEDULER,
        warmup_steps=WARMUP_RATIO,
        seed=SEED,
        eval_strategy="no",
        **options,
    )
    train = load_split(Path(spec["train"]), None, "auto")
    trainer = SFTTrainer(
        model=spec["model_path"],
        args=args,
        train_dataset=Dataset.from_list([{"messages": e.messages} for e in train]),
        processing_class=processing_class,
        peft_config=LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=LORA["target_modules"],
            task_type="CAUSAL_LM",
        ),
        callbacks=[meter],
    )
    trainer.train()
    meter.effective.update(
        layout=layout or "padded", assistant_only_loss=args.assistant_only_loss, max_length=args.max_length
    )


def run_hone(spec: dict[str, Any], overrides: list[str], meter: StepMeter) -> None:
    from rich.console import Console

    import hone.train.sft
    from hone.config import load_config
    from hone.train.pipeline import run_training

    shared = [
        f"model.reference={spec['model_path']}",
        f"model.max_length={MAX_LENGTH}",
        f"data.train={spec['train']}",
        "data.validation=null",  # validated here, after training, the same way for every configuration
        "train.adapter.kind=lora",
        *(f"train.adapter.{name}={value}" for name, value in LORA.items()),
        f"train.learning_rate={LEARNING_RATE}",
        f"train.max_steps={spec['steps']}",
        f"train.batch_size={spec['batch_size']}",
        f"train.warmup_ratio={WARMUP_RATIO}",
        f"train.scheduler={SCHEDULER}",
        f"train.seed={SEED}",
        "train.eval_every=null",
        "track.enabled=false",
        f"run.dir={spec['folder']}",
        f"run.name={spec['name']}",
    ]
    config = load_config(QUICKSTART, [*shared, *overrides])
    original = hone.train.sft.callbacks
    hone.train.sft.callbacks = lambda *args: [*original(*args), meter]  # type: ignore[assignment]
    try:
        run = run_training(config, Console(quiet=True), track=False)
    finally:
        hone.train.sft.callbacks = original  # type: ignore[assignment]
    meter.effective.update(
        layout=run.manifest.training.layout,
        cpu_kernels=run.manifest.training.cpu_kernels,
        assistant_only_loss=True,
        max_length=MAX_LENGTH,
    )


def child(spec: dict[str, Any]) -> None:
    """One configuration in this (fresh) process; the result goes to spec['result'] as JSON."""
    from hone.data.load import load_split
    from hone.models.resolve import load_tokenizer

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    recipe = RECIPES[spec["name"]]
    meter = StepMeter(spec["device"])
    began = time.perf_counter()
    if isinstance(recipe, TrlRecipe):
        run_trl(spec, recipe, meter)
    else:
        run_hone(spec, recipe, meter)
    train_wall = time.perf_counter() - began
    steps = len(meter.step_ends) - 1
    if steps < 2:
        raise SystemExit(f"{spec['name']}: {steps} step(s) ran; need at least 2 (the first is warm-up)")
    if len(meter.batches) < steps:
        raise SystemExit(f"{spec['name']}: counted {len(meter.batches)} batches for {steps} steps")
    timed = meter.batches[1:steps]
    seconds = meter.step_ends[-1] - meter.step_ends[1]
    # model FLOPs (4N per trained token plus causal attention): the same count for every configuration,
    # whatever it skips or recomputes
    shape = AutoConfig.from_pretrained(spec["model_path"])
    flops = sum(training_flops(shape, b["tokens"], b["attention_pairs"]) for b in timed)
    peak = peak_flops(torch.cuda.get_device_name(0)) if spec["device"] == "cuda" else None
    validation = load_split(Path(spec["validation"]), None, "auto")[: spec["val_examples"]]
    tokenizer = load_tokenizer(Path(spec["model_path"]))
    loss = validation_loss(meter.model, tokenizer, validation, spec["device"])
    result = {
        "name": spec["name"],
        "steps": steps,
        "seconds_per_step": seconds / (steps - 1),
        "tokens_per_second": sum(b["tokens"] for b in timed) / seconds,
        "labelled_tokens_per_second": sum(b["labelled"] for b in timed) / seconds,
        "padding_share": 1 - sum(b["tokens"] for b in timed) / sum(b["positions"] for b in timed),
        "model_tflops": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
        "tokens_per_step": [b["tokens"] for b in meter.batches[:steps]],
        "labelled_per_step": [b["labelled"] for b in meter.batches[:steps]],
        "peak_memory_mib": meter.peak_mib,
        "validation_loss": loss,
        "validation_examples": len(validation),
        "train_wall_seconds": train_wall,
        "effective": meter.effective,
    }
    Path(spec["result"]).write_text(json.dumps(result, indent=2), encoding="utf-8")


def run_spec(name: str, spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    return {**spec, "name": name, "folder": str(folder / name), "result": str(folder / f"{name}.json")}


def measure(name: str, spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run one configuration in a fresh process and read its result."""
    spec = run_spec(name, spec, folder)
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-6000:])
        raise SystemExit(f"{name} failed (exit {done.returncode})")
    return json.loads(Path(spec["result"]).read_text(encoding="utf-8"))


MEDIANS = (
    "seconds_per_step",
    "tokens_per_second",
    "model_tflops",
    "labelled_tokens_per_second",
    "padding_share",
    "peak_memory_mib",
    "validation_loss",
)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, float]]:
    """Medians over rounds per configuration, and hone's trained tokens/s over each other's."""
    medians = {
        name: {key: statistics.median(r[key] for r in results) for key in MEDIANS}
        | {"steps": results[0]["steps"], "effective": results[0]["effective"], "mfu": median_mfu(results)}
        for name, results in runs.items()
    }
    ratios = {}
    if "hone" in medians:
        for name, median in medians.items():
            if name != "hone":
                ratios[f"hone/{name}"] = medians["hone"]["tokens_per_second"] / median["tokens_per_second"]
    return medians, ratios


def median_mfu(results: list[dict[str, Any]]) -> float | None:
    values = [r["mfu"] for r in results if r.get("mfu") is not None]
    return statistics.median(values) if values else None


def markdown(medians: dict[str, Any], ratios: dict[str, float], on: str) -> str:
    memory = "peak GPU memory" if on == "cuda" else "peak RSS"
    lines = [
        "| configuration | steps | s/step | trained tokens/s | labelled tokens/s | padding "
        f"| model TFLOP/s | MFU | {memory} | val loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in medians.items():
        mfu = f"{m['mfu']:.1%}" if m.get("mfu") is not None else "-"
        lines.append(
            f"| {name} | {m['steps']} | {m['seconds_per_step']:.2f} | {m['tokens_per_second']:.0f} | "
            f"{m['labelled_tokens_per_second']:.1f} | {m['padding_share']:.0%} | "
            f"{m['model_tflops']:.2f} | {mfu} | "
            f"{m['peak_memory_mib'] / 1024:.2f} GiB | {m['validation_loss']:.4f} |"
        )
    lines += ["", *(f"{pair} trained tokens/s: {ratio:.2f}x" for pair, ratio in ratios.items())]
    lines += [
        "",
        "| configuration | compute | weights | checkpointing | layout | attention | loss on |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in medians.items():
        e = m["effective"]
        lines.append(
            f"| {name} | {'bf16 autocast' if e['bf16'] else e['weights']} | {e['weights']} | "
            f"{'on' if e['gradient_checkpointing'] else 'off'} | {e['layout']} | {e['attention']} | "
            f"{'assistant turns' if e['assistant_only_loss'] else 'whole chat'} |"
        )
    return "\n".join(lines)


def machine(on: str) -> dict[str, Any]:
    import peft
    import transformers
    import trl

    from hone.hardware import cpu_name

    return {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_native_bf16": cpu_bf16_native() is not None,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if on == "cuda" else "cpu",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="any hone model reference")
    parser.add_argument(
        "--shape",
        choices=list(SHAPES),
        default=None,
        help="train a random-weight bf16 model of this public shape (benchmarks/model_shapes.py) with "
        "--model's tokenizer instead, written to a temporary folder: for machines that reach no model hub",
    )
    parser.add_argument(
        "--steps", type=int, default=10, help="optimizer steps per run (the first is warm-up)"
    )
    parser.add_argument(
        "--steps-defaults", type=int, default=3, help="steps of bf16 runs on a CPU without bf16"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds; odd rounds run the order reversed")
    parser.add_argument("--batch-size", type=int, default=8, help="examples (or packed rows) per step")
    names = ", ".join(RECIPES)
    parser.add_argument(
        "--configs", nargs="+", default=MAIN, choices=list(RECIPES), metavar="NAME", help=names
    )
    parser.add_argument("--train", type=Path, default=TASK / "train.jsonl")
    parser.add_argument("--validation", type=Path, default=TASK / "validation.jsonl")
    parser.add_argument("--val-examples", type=int, default=None, help="first N validation examples (all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from hone.models.resolve import resolve_model

    on = device()
    slow_bf16 = not fast_bf16(on)
    slow_steps = min(args.steps, args.steps_defaults) if slow_bf16 else args.steps
    if slow_steps < 2:
        parser.error("every run needs at least 2 steps: the first is warm-up and is not timed")
    base = {
        "model_path": str(resolve_model(args.model)),
        "device": on,
        "batch_size": args.batch_size,
        "train": str(args.train.resolve()),
        "validation": str(args.validation.resolve()),
        "val_examples": args.val_examples,
        "threads": args.threads,
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.configs}
    order: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hone-throughput-") as scratch:
        if args.shape:
            shaped = Path(scratch) / f"random-{args.shape}"
            base["model_path"] = str(write_random_model(args.shape, shaped, Path(base["model_path"]), on))
        for number in range(args.rounds):
            for name in args.configs if number % 2 == 0 else reversed(args.configs):
                steps = slow_steps if uses_bf16(RECIPES[name], on) else args.steps
                folder = Path(scratch) / f"round-{number}"
                result = measure(name, {**base, "steps": steps}, folder)
                runs[name].append(result)
                order.append(name)
                print(
                    f"round {number + 1} {name}: {result['seconds_per_step']:.2f} s/step, "
                    f"{result['tokens_per_second']:.0f} trained tokens/s, "
                    f"val loss {result['validation_loss']:.4f}",
                    flush=True,
                )
    medians, ratios = summarize(runs)
    model = f"random-weight {args.shape} shape" if args.shape else args.model
    print(f"\nmodel={model} batch={args.batch_size} rounds={args.rounds} device={on}\n")
    print(markdown(medians, ratios, on))
    report = {
        "command": " ".join(["python", "benchmarks/train_throughput.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(on),
        "settings": {
            "model": args.model if not args.shape else None,
            "shape": args.shape,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "steps_bf16": slow_steps,
            "rounds": args.rounds,
            "lora": LORA,
            "learning_rate": LEARNING_RATE,
            "scheduler": SCHEDULER,
            "warmup_ratio": WARMUP_RATIO,
            "seed": SEED,
            "recipes": {
                n: asdict(r) if isinstance(r, TrlRecipe) else r for n, r in RECIPES.items() if n in runs
            },
        },
        "order": order,
        "runs": runs,
        "median": medians,
        "ratios": ratios,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        main()
