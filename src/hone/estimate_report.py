"""`hone estimate` end to end: measure this machine, read the model's config, count the data, then show it.

The arithmetic is in `hone.estimate`; this module gathers its inputs (the only part that does I/O: a short
matmul and memory-copy benchmark on `cpu`, the model's config, the data's tokens) and prints the result.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hone.errors import HoneError
from hone.estimate import (
    AMORTISE_MONTHS,
    API_INPUT_PRICE,
    API_OUTPUT_PRICE,
    CALIBRATED_CPU_MFU,
    CHARS_PER_TOKEN,
    COMPLETION_TOKENS,
    CPU_PRICE_PER_HOUR,
    DEFAULT_SEQ_LEN,
    DEFAULT_TOKENS,
    GIB,
    HOURS_PER_MONTH,
    METHODS,
    PROMPT_TOKENS,
    Hardware,
    ModelShape,
    assumed_shape,
    break_even,
    estimate_method,
    fitting_summary,
    gpu_hardware,
    parse_size,
    requests_per_hour,
    serving_throughput,
    shape_from_config,
)

if TYPE_CHECKING:
    from hone.config import TrainConfig
    from hone.data.check import DataReport


def measure_matmul_flops(size: int = 1024, seconds: float = 1.5, dtype: Any = None) -> float:
    """Matmul rate of this machine in `dtype` (fp32 by default): one thread's best size x size matmul
    (2*size^3 FLOPs) x threads.

    The best, not the mean, and one thread at a time: on a machine shared with other jobs a single-thread
    matmul still catches whole quiet time slices, so this measures what the cores can do (what a run gets
    when it has them) and repeats within a few percent; large matmuls scale almost linearly across cores.
    """
    import torch

    threads = torch.get_num_threads()
    left, right = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.set_num_threads(1)
    try:
        left @ right  # warm-up
        best, deadline = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            left @ right
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(threads)
    return best * threads


def measure_bandwidth(megabytes: int = 512, seconds: float = 0.4) -> float:
    """Best copy rate (bytes read + written per second) of a buffer larger than the caches."""
    import torch

    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        target.copy_(source)
        best = max(best, 2 * source.numel() * 4 / (time.perf_counter() - start))
    return best


def total_memory() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def hardware(name: str, mfu: float | None = None, price_per_hour: float | None = None) -> Hardware:
    """`cpu`: this machine, with its matmul rate and memory bandwidth measured (~1.5 s); else a table GPU."""
    if mfu is not None and not 0 < mfu <= 1:
        raise HoneError(f"--mfu {mfu}: expected a fraction in (0, 1]")
    if name.lower() != "cpu":
        return gpu_hardware(name, mfu, price_per_hour)
    import torch

    from hone.hardware import cpu_bf16_native

    # Measured in the precision hone trains in here: bf16 on CPUs with AMX or AVX512-BF16.
    precision = "bf16" if cpu_bf16_native() else "fp32"
    flops = measure_matmul_flops(dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    return Hardware(
        name="cpu",
        flops=flops,
        mfu=mfu or CALIBRATED_CPU_MFU[precision],
        memory=total_memory(),
        bandwidth=measure_bandwidth(),
        price_per_hour=CPU_PRICE_PER_HOUR if price_per_hour is None else price_per_hour,
        precision=precision,
        basis=f"this machine, measured {flops / 1e9:.0f} GFLOP/s {precision} matmul ({os.cpu_count()} cores)",
    )


NO_CODE: dict[str, Any] = {"trust_remote_code": False}


def model_source(reference: str) -> tuple[str, dict[str, Any]]:
    """Where transformers finds the model's config and tokenizer, without converting or downloading weights.

    A built-in alias reads its converted folder when the cache has one, else the GGUF's own metadata. The
    options never let a model run code of its own: an estimate reads a config and a tokenizer, nothing more.
    """
    from hone.models.resolve import ALIASES, CONVERSION_RECORD, HUB_ID, models_cache, resolve_model

    if reference in ALIASES:
        converted = models_cache() / reference
        if (converted / CONVERSION_RECORD).is_file():
            return str(converted), NO_CODE
        gguf = ALIASES[reference].locate()
        return str(gguf.parent), {**NO_CODE, "gguf_file": gguf.name}
    path = Path(reference).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return str(path.parent), {**NO_CODE, "gguf_file": path.name}
    if HUB_ID.match(reference) and not path.exists():
        return reference, NO_CODE
    return str(resolve_model(reference)), NO_CODE  # a folder, or resolve_model's error for anything else


def is_parameter_count(reference: str) -> bool:
    """ "135M", "7e9": a model given by its size; a local folder of that name is still a folder."""
    return reference[:1].isdigit() and not Path(reference).exists()


def model_shape(reference: str) -> ModelShape:
    """A parameter count ("135M", "7e9") or a model reference, read from its config alone."""
    if is_parameter_count(reference):
        return assumed_shape(parse_size(reference, "--model"))
    from transformers import AutoConfig

    source, options = model_source(reference)
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except Exception as exc:
        raise HoneError(
            f"model {reference!r}: cannot read its config ({type(exc).__name__}: {exc})"
        ) from None
    text_config = getattr(config, "text_config", None) or config
    exact = None
    if text_config.model_type not in ("llama", "mistral", "qwen2", "qwen3"):
        from hone.models.parameters import count_parameters_on_meta

        exact = count_parameters_on_meta(config)
    shape = shape_from_config(text_config.to_dict(), exact)
    return ModelShape(**{**asdict(shape), "basis": f"{reference}: {shape.basis}"})


def count_data_tokens(path: Path, reference: str) -> dict[str, Any]:
    """Tokens of a data file as trained: the model's chat template and tokenizer, else characters / 4."""
    from hone.data.check import example_text, token_lengths
    from hone.data.formats import load_examples
    from hone.data.sources import read_all

    records, problems = read_all(path)
    examples, errors = load_examples(records)
    problems += errors
    if problems:
        more = f" (and {len(problems) - 1} more; see `hone data check {path}`)" if len(problems) > 1 else ""
        raise HoneError(problems[0] + more)
    if not examples:
        raise HoneError(f"{path}: no examples")
    if not is_parameter_count(reference):
        from transformers import AutoTokenizer

        from hone.models.templates import training_chat_template

        source, options = model_source(reference)
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        lengths = token_lengths(examples, tokenizer, training_chat_template(tokenizer))
        basis = f"{path}: {len(examples)} examples, counted with the model's tokenizer and chat template"
    else:
        lengths = [math.ceil(len(example_text(example)) / CHARS_PER_TOKEN) for example in examples]
        basis = f"{path}: {len(examples)} examples, ~{CHARS_PER_TOKEN} characters per token (no tokenizer)"
    return {
        "tokens": sum(lengths),
        "examples": len(examples),
        "mean_length": sum(lengths) / len(lengths),
        "basis": basis,
    }


@dataclass(frozen=True)
class EstimateOptions:
    """What `hone estimate` was asked; docs/estimate.md documents every default."""

    model: str = "smollm2-135m-instruct"
    methods: tuple[str, ...] = METHODS
    tokens: str | None = None
    data: Path | None = None
    epochs: float = 1.0
    hardware: str = "cpu"
    mfu: float | None = None
    price_per_hour: float | None = None
    seq_len: int | None = None
    batch_size: int = 8
    lora_r: int = 16
    api_input_price: float = API_INPUT_PRICE
    api_output_price: float = API_OUTPUT_PRICE
    prompt_tokens: int = PROMPT_TOKENS
    completion_tokens: int = COMPLETION_TOKENS


def check_options(options: EstimateOptions) -> None:
    unknown = [method for method in options.methods if method not in METHODS]
    if unknown:
        raise HoneError(f"--method {unknown[0]!r}: expected one of {', '.join(METHODS)}")
    if options.tokens is not None and options.data is not None:
        raise HoneError("give --tokens or --data, not both")
    positive = {"--epochs": options.epochs, "--batch-size": options.batch_size, "--lora-r": options.lora_r}
    positive["--seq-len"] = options.seq_len if options.seq_len is not None else 1
    prices = {"--api-input-price": options.api_input_price, "--api-output-price": options.api_output_price}
    prices["--price-per-hour"] = options.price_per_hour or 0.0
    counts = {"--prompt-tokens": options.prompt_tokens, "--completion-tokens": options.completion_tokens}
    for name, value in positive.items():
        if value <= 0:
            raise HoneError(f"{name} {value}: expected a positive number")
    for name, value in {**prices, **counts}.items():
        if value < 0:
            raise HoneError(f"{name} {value}: expected zero or more")
    if options.prompt_tokens + options.completion_tokens == 0:
        raise HoneError("--prompt-tokens and --completion-tokens are both 0: a request has no tokens")


def run_estimate(options: EstimateOptions) -> dict[str, Any]:
    """Everything `hone estimate` reports, as plain JSON-ready values (bytes, seconds, USD, FLOPs)."""
    check_options(options)  # cheap checks first: a typo should not wait for a config read or a benchmark
    per_epoch = parse_size(options.tokens, "--tokens") if options.tokens is not None else DEFAULT_TOKENS
    basis = "--tokens" if options.tokens is not None else "default; pass --tokens or --data"
    seq_len = options.seq_len or DEFAULT_SEQ_LEN
    machine = hardware(options.hardware, options.mfu, options.price_per_hour)
    shape = model_shape(options.model)
    if options.data is not None:
        counted = count_data_tokens(options.data, options.model)
        per_epoch, basis = counted["tokens"], counted["basis"]
        seq_len = options.seq_len or max(1, round(counted["mean_length"]))
    total = round(per_epoch * options.epochs)
    methods = {
        method: estimate_method(shape, method, machine, total, seq_len, options.batch_size, options.lora_r)
        for method in options.methods
    }
    serving = serving_throughput(shape, machine)
    per_hour = requests_per_hour(
        options.prompt_tokens,
        options.completion_tokens,
        serving["prefill_tokens_per_second"],
        serving["decode_tokens_per_second"],
    )
    api = (
        options.api_input_price,
        options.api_output_price,
        options.prompt_tokens,
        options.completion_tokens,
    )
    return {
        "model": {"reference": options.model, **asdict(shape)},
        "hardware": asdict(machine),
        "tokens": {
            "per_epoch": per_epoch,
            "epochs": options.epochs,
            "total": total,
            "seq_len": seq_len,
            "batch_size": options.batch_size,
            "lora_r": options.lora_r,
            "basis": basis,
        },
        "methods": methods,
        "fit": fitting_summary(methods),
        "serving": {**serving, "requests_per_hour": per_hour},
        "api": dict(
            zip(("input_price", "output_price", "prompt_tokens", "completion_tokens"), api, strict=True)
        ),
        "break_even": {
            method: break_even(*api, per_hour, machine.price_per_hour, result["cost"])
            for method, result in methods.items()
        },
    }


def data_check_estimate(
    report: DataReport, train: TrainConfig, model: Path, price_per_hour: float | None = None
) -> dict[str, Any]:
    """`hone estimate`'s time and cost of training on a checked data set with this config on this machine:
    the same call (run_estimate) on the train split's tokens, the planned epochs, the config's method, LoRA
    rank and batch size, and sequences of the examples' mean length (as `--data`), so `hone data check` and
    `hone estimate` give one figure. Empty without a train split or when it holds no tokens."""
    from hone.data.check import planned_epochs

    split = next((split for split in report.splits if split.name == "train"), None)
    if split is None or not split.token_lengths.get("total") or not split.examples:
        return {}
    options = EstimateOptions(
        model=str(model),
        methods=(train.adapter.kind,),
        tokens=str(int(split.token_lengths["total"])),
        epochs=planned_epochs(train, split.examples),
        price_per_hour=price_per_hour,
        seq_len=max(1, round(split.token_lengths["mean"])),
        batch_size=train.batch_size,
        lora_r=getattr(train.adapter, "r", EstimateOptions.lora_r),  # full fine-tuning has no rank
    )
    estimate = run_estimate(options)
    method, machine, tokens = options.methods[0], estimate["hardware"], estimate["tokens"]
    result = estimate["methods"][method]
    return {
        "training_tokens": tokens["total"],
        "epochs": options.epochs,
        "method": method,
        "tokens_per_second": tokens["total"] / result["seconds"] if result["seconds"] else 0.0,
        "seconds": result["seconds"],
        "cost": result["cost"],
        "price_per_hour": machine["price_per_hour"],
        "fits": result["fits"],
        "basis": f"hone estimate: {method}, batch {tokens['batch_size']} x {tokens['seq_len']} tokens; "
        f"{machine['basis']}, MFU {machine['mfu']:.2f}",
    }


def human(value: float, billion: str = "G") -> str:
    """1.35e8 -> '135M': k/M/G/T/P, three significant digits; parameters say B for billions."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), (billion, 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{prefix}"
    return f"{value:.3g}"


def money(dollars: float) -> str:
    return f"${dollars:,.2f}" if dollars >= 0.01 or dollars == 0 else f"${dollars:.1g}"


def duration(seconds: float) -> str:
    for unit, scale in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds:.1f} s"


def print_estimate(report: dict[str, Any], console: Any) -> None:
    """What it is based on, the training table, memory by part, then API vs self-hosting."""
    from rich.table import Table

    model, machine, tokens, methods = report["model"], report["hardware"], report["tokens"], report["methods"]
    console.print(f"[bold]model[/] {human(model['parameters'], 'B')} parameters; {model['basis']}")
    console.print(
        f"[bold]hardware[/] {machine['name']}: {machine['basis']}; MFU {machine['mfu']:.2f}, "
        f"{machine['memory'] / GIB:.0f} GiB, ${machine['price_per_hour']:.2f}/h, {machine['precision']}"
    )
    console.print(
        f"[bold]tokens[/] {human(tokens['total'])} = {human(tokens['per_epoch'])} x {tokens['epochs']:g} "
        f"epochs ({tokens['basis']}); steps of {tokens['batch_size']} x {tokens['seq_len']} tokens"
    )
    table = Table(title="Training", caption="GiB: peak memory; ckpt: with gradient checkpointing")
    for column in ("method", "trains", "FLOP/tok", "s/step", "time", "GiB", "fits", "cost"):
        table.add_column(column, justify="left" if column in ("method", "fits") else "right", no_wrap=True)
    for name, result in methods.items():
        fits = "yes" if result["fits"] else "[red]no[/]"
        table.add_row(
            name,
            human(result["trainable_parameters"], "B"),
            human(result["flops_per_token"]["total"]),
            f"{result['seconds_per_step']:.2f}",
            duration(result["seconds"]),
            f"{result['memory']['total'] / GIB:.1f}",
            fits + (", ckpt" if result["checkpointing"] else ""),
            money(result["cost"]),
        )
    console.print(table)
    parts = Table(title="Memory by part (GiB)")
    parts.add_column("part")
    for name in methods:
        parts.add_column(name, justify="right")
    for part in next(iter(methods.values()))["memory"]:
        parts.add_row(part, *(f"{result['memory'][part] / GIB:.2f}" for result in methods.values()))
    console.print(parts)
    smallest = report["fit"]["smallest"]
    if not report["fit"]["fitting"]:
        console.print(
            f"[red]nothing fits in {machine['memory'] / GIB:.0f} GiB[/]: the smallest, {smallest['method']}, "
            f"needs {smallest['bytes'] / GIB:.1f} GiB"
        )
    print_break_even(report, console)


def print_break_even(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    serving, api = report["serving"], report["api"]
    console.print(
        f"[bold]serving[/] {serving['requests_per_hour']:.0f} requests/h of {api['prompt_tokens']} + "
        f"{api['completion_tokens']} tokens ({serving['prefill_tokens_per_second']:.0f} prompt tokens/s, "
        f"{serving['decode_tokens_per_second']:.0f} decoded tokens/s at batch {serving['batch']}); "
        f"API ${api['input_price']}/M input, ${api['output_price']}/M output tokens"
    )
    table = Table(
        title="API vs self-hosting",
        caption=f"a machine up {HOURS_PER_MONTH} h/month; training spread over {AMORTISE_MONTHS} months",
    )
    columns = ("method", "API $/1k req", "self $/1k req*", "self $/month", "break-even req/month")
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right", no_wrap=True)
    for name, result in report["break_even"].items():
        volume = result["break_even_requests_per_month"]
        table.add_row(
            name,
            f"{result['api_per_1000_requests']:.4f}",
            f"{result['self_hosted_per_1000_requests_at_capacity']:.4f}",
            f"{result['self_hosted_per_month']:.2f}",
            human(volume) if volume is not None else "[red]never[/]",
        )
    console.print(table)
    console.print(
        f"* at full load ({human(next(iter(report['break_even'].values()))['capacity_requests_per_month'])} "
        "requests/month); 'never': one machine costs more per request than the API even at full load"
    )
