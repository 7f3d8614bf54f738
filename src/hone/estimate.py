"""`hone estimate`'s arithmetic: time, memory and money of a fine-tuning run before any compute is spent.

Every function here is pure arithmetic on stated assumptions (docs/estimate.md lists
them), with its formula in its docstring. It takes a `ModelShape` and a `Hardware`;
reading a model's config, measuring this machine and counting a data file's tokens happen in
`hone.estimate_report`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from hone.errors import HoneError

GIB = 1024**3
METHODS = ("full", "lora", "qlora")
BYTES_PER_VALUE = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}
# NF4 with double quantisation (hone's QLoRA setting): 4-bit codes, an 8-bit absmax per block of 64 weights
# and an fp32 constant per 256 absmaxes. Parameters it does not quantise (embeddings, head, norms) are
# upcast to fp32 by peft's prepare_model_for_kbit_training.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
QLORA_DEQUANT_FACTOR = 1.2  # assumption: dequantising NF4 weights adds ~20% to each base-weight matmul
LOGIT_COPIES = 2  # the fp32 logits and their softmax, kept for the loss's backward
OVERHEAD_BYTES = 1.0 * GIB  # assumption: framework, allocator slack (and the CUDA context on a GPU)
# Calibrated input, not a law: the share of this machine's measured matmul rate that hone's training reaches
# on CPU, by precision. Derived from training throughput measured on a 2-core Xeon (fp32: 0.55 at 5.41
# s/step, rounded down; bf16 on AMX: 0.12 at 2.41 s/step, a small model's step being bound by everything
# that is not a large matmul). The measurements and the derivation are in benchmarks/RESULTS.md, section
# "hone estimate's CPU calibration": re-derive the value there when hone's CPU training speed changes.
CALIBRATED_CPU_MFU = {"fp32": 0.5, "bf16": 0.12}
GPU_MFU = 0.35  # a typical single-GPU fine-tuning utilisation of the datasheet peak
CPU_PRICE_PER_HOUR = 0.10  # assumption: a small cloud VM of this machine's size
HOURS_PER_MONTH = 730  # 24 * 365 / 12: a machine kept up all month
AMORTISE_MONTHS = 12  # the one-off training cost is spread over a year of serving
SERVING_BATCH = 8  # requests decoded together: each pass over the weights yields this many tokens
# Defaults of the API side: the list price of a small hosted model (USD per million tokens, OpenAI
# gpt-4o-mini, 2024) and a short classification-style request.
API_INPUT_PRICE = 0.15
API_OUTPUT_PRICE = 0.60
PROMPT_TOKENS = 200
COMPLETION_TOKENS = 50
CHARS_PER_TOKEN = 4  # English text without a tokenizer
DEFAULT_TOKENS = 1_000_000
DEFAULT_SEQ_LEN = 512
ASSUMED_VOCAB = 32_000  # shape of a model given only as a parameter count


@dataclass(frozen=True)
class GPU:
    flops: float  # dense bf16 (fp16 on T4) tensor-core FLOP/s, no sparsity
    memory_gib: float
    bandwidth: float  # bytes/s
    price_per_hour: float  # USD, typical on-demand cloud price in 2024-25 (an assumption; --price-per-hour)
    precision: str = "bf16"


# Peaks and bandwidths from the vendors' datasheets (SXM parts for H100/H200/A100).
GPUS: dict[str, GPU] = {
    "h100": GPU(989e12, 80, 3.35e12, 3.00),
    "h200": GPU(989e12, 141, 4.8e12, 3.80),
    "a100-80gb": GPU(312e12, 80, 2.039e12, 1.80),
    "a100-40gb": GPU(312e12, 40, 1.555e12, 1.30),
    "l4": GPU(121e12, 24, 0.3e12, 0.80),
    "a10g": GPU(70e12, 24, 0.6e12, 1.00),
    "rtx4090": GPU(165e12, 24, 1.008e12, 0.40),
    "t4": GPU(65e12, 16, 0.32e12, 0.35, precision="fp16"),
}


@dataclass(frozen=True)
class ModelShape:
    """What the arithmetic needs to know about a decoder-only transformer with a gated MLP."""

    parameters: int  # everything the checkpoint holds
    matmul_parameters: int  # weights a token is multiplied by: the layers' linears and the LM head
    quantisable_parameters: int  # the layers' linear weights: what QLoRA stores in NF4
    layers: int
    hidden: int
    attention: int  # query heads x head size: the width of attention scores and outputs
    kv: int  # key/value heads x head size (smaller than `attention` under GQA)
    intermediate: int
    heads: int
    vocab: int
    basis: str

    def linears(self) -> list[tuple[int, int]]:
        """(d_in, d_out) of each linear of one layer: q, k, v, o, gate, up, down."""
        d, a, kv, ff = self.hidden, self.attention, self.kv, self.intermediate
        return [(d, a), (d, kv), (d, kv), (a, d), (d, ff), (d, ff), (ff, d)]


@dataclass(frozen=True)
class Hardware:
    name: str
    flops: float  # FLOP/s: measured square-matmul rate (cpu) or datasheet peak (GPU)
    mfu: float  # the fraction of `flops` training achieves
    memory: float  # bytes
    bandwidth: float  # bytes/s
    price_per_hour: float
    precision: str  # what hone trains and serves in on it
    basis: str

    @property
    def gpu(self) -> bool:
        return self.name != "cpu"


SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)
SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_size(text: str | int | float, what: str = "count") -> int:
    """'135M' -> 135_000_000; also '1.5B', '7e9', '2k', 135000000. k/M/B(=G)/T are powers of 1000."""
    match = SIZE.match(str(text))
    value = float(match.group(1)) * SUFFIX[match.group(2).lower()] if match else 0.0
    if value < 1:
        raise HoneError(f"{what} {text!r}: expected a positive count like 135M, 1.5B, 7e9 or 2000000")
    return round(value)


def shape_from_config(config: dict[str, Any], parameters: int | None = None) -> ModelShape:
    """Parameter count and shape of a llama-family config (llama, mistral, qwen2, qwen3), weights unread.

    parameters = V*d (embeddings) + [V*d if the head is not tied] + d (final norm)
                 + L * (q, k, v, o, gate, up, down weights + their biases + 2 norms of d [+ 2 of head_dim]).
    GQA narrows k and v to kv_heads * head_dim. Biases: llama's attention_bias / mlp_bias flags, qwen2's
    fixed q/k/v biases; qwen3 adds per-head q/k norms. `parameters` overrides the count (another family,
    counted exactly elsewhere) while the shape still drives FLOPs and activations.
    """
    try:
        d, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        heads, ff = config["num_attention_heads"], config["intermediate_size"]
    except KeyError as exc:
        raise HoneError(f"model config has no {exc.args[0]!r}: not a decoder this estimate knows") from None
    head_dim = config.get("head_dim") or d // heads
    kv_heads = config.get("num_key_value_heads") or heads
    attention, kv = heads * head_dim, kv_heads * head_dim
    model_type = config.get("model_type", "")
    shape = ModelShape(0, 0, 0, layers, d, attention, kv, ff, heads, vocab, basis="")
    linear_weights = sum(d_in * d_out for d_in, d_out in shape.linears())
    qkv_bias = config.get("attention_bias", False) or model_type == "qwen2"
    per_layer = linear_weights + 2 * d
    per_layer += (attention + 2 * kv) * qkv_bias + d * bool(config.get("attention_bias", False))
    per_layer += (2 * ff + d) * bool(config.get("mlp_bias", False))
    per_layer += 2 * head_dim * (model_type == "qwen3")
    tied = bool(config.get("tie_word_embeddings", True))
    counted = vocab * d * (1 if tied else 2) + d + layers * per_layer
    return ModelShape(
        parameters=parameters if parameters is not None else counted,
        matmul_parameters=layers * linear_weights + vocab * d,
        quantisable_parameters=layers * linear_weights,
        layers=layers,
        hidden=d,
        attention=attention,
        kv=kv,
        intermediate=ff,
        heads=heads,
        vocab=vocab,
        basis=f"{model_type or 'decoder'} config: {layers} layers, hidden {d}, {heads} heads "
        f"({kv_heads} kv), MLP {ff}, vocab {vocab}, {'tied' if tied else 'separate'} head",
    )


def assumed_shape(parameters: int) -> ModelShape:
    """A plausible shape for a bare parameter count: N ~ 12*L*d^2 + V*d with d = 128*L (llama-like).

    Only activation memory, attention FLOPs and LoRA's size depend on it; the weight FLOPs use N itself.
    """
    layers = min(
        range(1, 200), key=lambda n: abs(12 * n * (128 * n) ** 2 + ASSUMED_VOCAB * 128 * n - parameters)
    )
    d = 128 * layers
    ff = round(8 * d / 3 / 64) * 64
    heads = max(1, d // 128)
    return ModelShape(
        parameters=parameters,
        matmul_parameters=parameters,
        quantisable_parameters=max(0, parameters - ASSUMED_VOCAB * d),
        layers=layers,
        hidden=d,
        attention=d,
        kv=d,
        intermediate=ff,
        heads=heads,
        vocab=ASSUMED_VOCAB,
        basis=f"a bare parameter count; shape assumed: {layers} layers, hidden {d}, MLP {ff}, "
        f"vocab {ASSUMED_VOCAB}",
    )


def lora_parameters(shape: ModelShape, r: int) -> int:
    """r * (d_in + d_out) per adapted linear: all-linear = q, k, v, o, gate, up, down of every layer."""
    return shape.layers * sum(r * (d_in + d_out) for d_in, d_out in shape.linears())


def trainable_parameters(shape: ModelShape, method: str, r: int) -> int:
    return shape.parameters if method == "full" else lora_parameters(shape, r)


def training_flops_per_token(
    shape: ModelShape, method: str, seq_len: int, lora_r: int, checkpointing: bool = False
) -> dict[str, float]:
    """FLOPs to train on one token, by part.

    weights:   full 6*N_mm (forward 2*N_mm, backward 4*N_mm: input and weight gradients);
               lora 4*N_mm (the frozen base still passes input gradients back, but gets none itself);
               qlora 4*N_mm * 1.2 (NF4 dequantisation, an assumption).
               N_mm = the layers' linear weights + the LM head (an embedding lookup costs nothing).
    adapters:  6 * LoRA parameters (forward 2, backward 4), lora and qlora only.
    attention: 12*L*d_attn*seq_len: QK^T and AV cost 2*2*d_attn*seq_len per token per layer forward,
               counted over the whole sequence as PaLM's MFU formula does, x3 for training; both operands
               are activations, so no method skips their gradients.
    recompute: gradient checkpointing runs the layers' forward again: 2*(N_mm - V*d) + 4*L*d_attn*seq_len.
    """
    n_mm = shape.matmul_parameters
    weights = 6.0 * n_mm if method == "full" else 4.0 * n_mm
    if method == "qlora":
        weights *= QLORA_DEQUANT_FACTOR
    adapters = 0.0 if method == "full" else 6.0 * lora_parameters(shape, lora_r)
    attention_forward = 4.0 * shape.layers * shape.attention * seq_len
    recompute = 2.0 * (n_mm - shape.vocab * shape.hidden) + attention_forward if checkpointing else 0.0
    parts = {
        "weights": weights,
        "adapters": adapters,
        "attention": 3 * attention_forward,
        "recompute": recompute,
    }
    return {**parts, "total": sum(parts.values())}


def activation_values_per_token_layer(shape: ModelShape, method: str, seq_len: int, lora_r: int) -> int:
    """Values one layer keeps per token for the backward pass (an approximation of a llama layer).

    4*d (the two norms' inputs and outputs) + 2*d_attn (queries, attention output) + 2*d_kv (keys,
    values) + 4*d_ff (gate, up, SiLU(gate), their product) + heads*seq_len (attention probabilities;
    conservative: a fused kernel does not keep them). LoRA with dropout (hone's default 0.05) also keeps
    each adapted linear's dropped input and its r-wide A output: 5*d + d_attn + d_ff + 7*r.
    """
    d, a, kv, ff = shape.hidden, shape.attention, shape.kv, shape.intermediate
    values = 4 * d + 2 * a + 2 * kv + 4 * ff + shape.heads * seq_len
    if method != "full":
        values += 5 * d + a + ff + 7 * lora_r
    return values


def training_memory(
    shape: ModelShape,
    method: str,
    precision: str,
    batch_size: int,
    seq_len: int,
    lora_r: int,
    checkpointing: bool,
) -> dict[str, float]:
    """Bytes by part; `total` is their sum.

    weights:     full N * 4 (trained weights stay fp32; autocast computes in b); a frozen base N * b
                 (b = 4 fp32, 2 bf16/fp16); qlora: N_linear * 0.516 (NF4) + the rest * 4 (fp32).
    gradients:   full N * 4; adapters 4 B per LoRA parameter (peft keeps adapters in fp32).
    optimizer:   AdamW's two fp32 states per trainable parameter: full 2*N*4, adapters 2*P*4.
    adapters:    the LoRA weights, P * 4.
    activations: T = batch*seq_len tokens; without checkpointing T*L*values*b (see
                 activation_values_per_token_layer); with it T*L*d*b (each layer's input) plus one
                 layer's values recomputed at a time.
    logits:      T * V * 4 B * 2 (fp32 logits and their softmax).
    overhead:    a fixed 1 GiB.
    """
    b = BYTES_PER_VALUE[precision]
    n = shape.parameters
    adapter_params = 0 if method == "full" else lora_parameters(shape, lora_r)
    if method == "qlora":
        weights = shape.quantisable_parameters * NF4_BYTES + (n - shape.quantisable_parameters) * 4.0
    else:
        weights = n * (4.0 if method == "full" else b)
    tokens = batch_size * seq_len
    per_layer = activation_values_per_token_layer(shape, method, seq_len, lora_r)
    if checkpointing:
        activations = tokens * (shape.layers * shape.hidden + per_layer) * b
    else:
        activations = tokens * shape.layers * per_layer * b
    parts = {
        "weights": weights,
        "gradients": n * 4.0 if method == "full" else adapter_params * 4.0,
        "optimizer": 2 * n * 4.0 if method == "full" else 2 * adapter_params * 4.0,
        "adapters": adapter_params * 4.0,
        "activations": float(activations),
        "logits": float(tokens * shape.vocab * 4 * LOGIT_COPIES),
        "overhead": OVERHEAD_BYTES,
    }
    return {**parts, "total": sum(parts.values())}


def default_checkpointing(method: str, hardware: Hardware) -> bool:
    """hone's own `auto` choice (hone.train.hardware): on a GPU for full fine-tuning only."""
    return hardware.gpu and method == "full"


def estimate_method(
    shape: ModelShape,
    method: str,
    hardware: Hardware,
    tokens: int,
    seq_len: int,
    batch_size: int,
    lora_r: int,
) -> dict[str, Any]:
    """One method on one machine: time = tokens * FLOPs/token / (FLOP/s * MFU), money = hours * price.

    Gradient checkpointing is hone's default choice, switched on when the run does not fit without it.
    """
    args = (shape, method, hardware.precision, batch_size, seq_len, lora_r)
    without, with_ = training_memory(*args, checkpointing=False), training_memory(*args, checkpointing=True)
    checkpointing = default_checkpointing(method, hardware) or without["total"] > hardware.memory
    memory = with_ if checkpointing else without
    flops = training_flops_per_token(shape, method, seq_len, lora_r, checkpointing)
    rate = hardware.flops * hardware.mfu
    seconds = tokens * flops["total"] / rate
    step_tokens = batch_size * seq_len
    return {
        "trainable_parameters": trainable_parameters(shape, method, lora_r),
        "checkpointing": checkpointing,
        "flops_per_token": flops,
        "total_flops": tokens * flops["total"],
        "seconds": seconds,
        "steps": math.ceil(tokens / step_tokens),
        "seconds_per_step": step_tokens * flops["total"] / rate,
        "cost": seconds / 3600 * hardware.price_per_hour,
        "memory": memory,
        "memory_without_checkpointing": without["total"],
        "memory_with_checkpointing": with_["total"],
        "fits": memory["total"] <= hardware.memory,
    }


def serving_throughput(shape: ModelShape, hardware: Hardware, batch: int = SERVING_BATCH) -> dict[str, float]:
    """Tokens/s of one machine serving the (merged) model in its training precision.

    decode:  min(batch * bandwidth / weight bytes, compute): at small batch every decoded token reads all
             weights once, and a batch shares that read; compute = FLOP/s * MFU / (2*N_mm).
    prefill: FLOP/s * MFU / (2*N_mm): prompts are processed in parallel, compute-bound.
    KV-cache reads and memory are left out (small at short contexts).
    """
    weight_bytes = shape.parameters * BYTES_PER_VALUE[hardware.precision]
    compute_bound = hardware.flops * hardware.mfu / (2 * shape.matmul_parameters)
    return {
        "batch": batch,
        "weight_bytes": weight_bytes,
        "decode_tokens_per_second": min(batch * hardware.bandwidth / weight_bytes, compute_bound),
        "prefill_tokens_per_second": compute_bound,
    }


def requests_per_hour(
    prompt_tokens: int, completion_tokens: int, prefill_tps: float, decode_tps: float
) -> float:
    """3600 / (prompt / prefill tokens/s + completion / decode tokens/s): one machine kept busy."""
    return 3600 / (prompt_tokens / prefill_tps + completion_tokens / decode_tps)


def break_even(
    api_input_price: float,
    api_output_price: float,
    prompt_tokens: int,
    completion_tokens: int,
    requests_per_hour: float,
    price_per_hour: float,
    training_cost: float = 0.0,
    amortise_months: float = AMORTISE_MONTHS,
    hours_per_month: float = HOURS_PER_MONTH,
) -> dict[str, float | None]:
    """API vs one self-hosted machine that is up all month.

    api per request       = (prompt * input price + completion * output price) / 1e6   (prices per 1M tokens)
    self-hosted per month = price/hour * 730 + training cost / 12   (a fixed cost, whatever the volume)
    break-even volume     = self-hosted per month / api per request   (requests/month)
    capacity              = requests/hour * 730; a break-even beyond it is None: one machine never gets
                            there (self-hosting is then dearer per request even at full load).
    """
    api_per_request = (prompt_tokens * api_input_price + completion_tokens * api_output_price) / 1e6
    monthly = price_per_hour * hours_per_month + training_cost / amortise_months
    capacity = requests_per_hour * hours_per_month
    volume = monthly / api_per_request if api_per_request > 0 else math.inf
    return {
        "api_per_1000_requests": api_per_request * 1000,
        "self_hosted_per_1000_requests_at_capacity": monthly / capacity * 1000,
        "self_hosted_per_month": monthly,
        "capacity_requests_per_month": capacity,
        "break_even_requests_per_month": volume if volume <= capacity else None,
    }


def fitting_summary(methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The methods that fit, and the one that needs the least memory (fitting or not)."""
    smallest = min(methods, key=lambda name: methods[name]["memory"]["total"])
    return {
        "fitting": [name for name, result in methods.items() if result["fits"]],
        "smallest": {
            "method": smallest,
            "bytes": methods[smallest]["memory"]["total"],
            "checkpointing": methods[smallest]["checkpointing"],
            "fits": methods[smallest]["fits"],
        },
    }


def gpu_hardware(name: str, mfu: float | None = None, price_per_hour: float | None = None) -> Hardware:
    """A GPU of the table at an assumed MFU (0.35) and price; --mfu and --price-per-hour override them."""
    key = name.lower()
    if key not in GPUS:
        raise HoneError(f"unknown hardware {name!r}; expected cpu or one of {', '.join(GPUS)}")
    gpu = GPUS[key]
    return Hardware(
        name=key,
        flops=gpu.flops,
        mfu=mfu or GPU_MFU,
        memory=gpu.memory_gib * GIB,
        bandwidth=gpu.bandwidth,
        price_per_hour=gpu.price_per_hour if price_per_hour is None else price_per_hour,
        precision=gpu.precision,
        basis=f"datasheet {gpu.flops / 1e12:.0f} TFLOP/s dense {gpu.precision}, {gpu.memory_gib} GiB",
    )
