"""`hone estimate`: the arithmetic against hand-computed answers, parameter counts against real models."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from hone.errors import HoneError
from hone.estimate import (
    CALIBRATED_CPU_MFU,
    GIB,
    NF4_BYTES,
    QLORA_DEQUANT_FACTOR,
    Hardware,
    assumed_shape,
    break_even,
    estimate_method,
    gpu_hardware,
    lora_parameters,
    parse_size,
    requests_per_hour,
    serving_throughput,
    shape_from_config,
    training_flops_per_token,
    training_memory,
)
from hone.estimate_report import count_data_tokens, hardware, model_shape
from hone.hardware import cpu_bf16_native
from hone.models.parameters import count_parameters, count_parameters_on_meta

REPO = Path(__file__).resolve().parents[2]
SMOLLM2_PARAMETERS = 134_515_008  # sum(p.numel()) of SmolLM2-135M (tied head)

# A shape small enough to check by hand: hidden 4, 2 layers, 2 heads of 2 (1 kv head), MLP 8, vocab 10.
# Per layer: q 4x4=16, k 4x2=8, v 8, o 16, gate 4x8=32, up 32, down 32 -> 144 linear weights + 2 norms of 4.
# parameters = 10*4 (tied embeddings) + 2*(144 + 8) + 4 (final norm) = 348; N_mm = 2*144 + 10*4 = 328.
HAND = {
    "model_type": "llama",
    "hidden_size": 4,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 8,
    "vocab_size": 10,
    "tie_word_embeddings": True,
}


def machine(**overrides: object) -> Hardware:
    values: dict = {
        "name": "test-gpu",
        "flops": 1e12,
        "mfu": 0.5,
        "memory": 16 * GIB,
        "bandwidth": 1e11,
        "price_per_hour": 2.0,
        "precision": "bf16",
        "basis": "by hand",
    }
    return Hardware(**{**values, **overrides})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("135M", 135_000_000),
        ("1.5B", 1_500_000_000),
        ("7e9", 7_000_000_000),
        ("2k", 2000),
        (135000000, 135000000),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["1.5X", "", "-3M", "0", "M"])
def test_parse_size_rejects_what_is_not_a_count(text: str) -> None:
    with pytest.raises(HoneError, match=rf"--tokens '{text}': expected a positive count like 135M"):
        parse_size(text, "--tokens")


def test_hand_shape_counts() -> None:
    shape = shape_from_config(HAND)
    assert (shape.parameters, shape.matmul_parameters, shape.quantisable_parameters) == (348, 328, 288)
    assert (shape.attention, shape.kv) == (4, 2)
    hand = LlamaConfig(**{k: v for k, v in HAND.items() if k != "model_type"})
    assert shape.parameters == count_parameters_on_meta(hand)


def test_smollm2_count_from_its_config_equals_the_real_model() -> None:
    shape = model_shape("smollm2-135m-instruct")  # the GGUF's metadata or the converted config; no weights
    assert shape.parameters == SMOLLM2_PARAMETERS
    real = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    assert count_parameters_on_meta(real) == SMOLLM2_PARAMETERS
    # the LM head multiplies every token although tied: 30 * (884,736 + 2,654,208) + 49,152 * 576
    assert shape.matmul_parameters == 134_479_872
    assert (shape.layers, shape.hidden, shape.kv, shape.heads) == (30, 576, 192, 9)


def test_tiny_model_folder_count_equals_its_weights(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model_shape(str(tiny_model_dir)).parameters == count_parameters(model)


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "llama", "tie_word_embeddings": False, "attention_bias": True, "mlp_bias": True},
        {"model_type": "mistral", "tie_word_embeddings": False},
        {"model_type": "qwen2", "tie_word_embeddings": True},  # q, k, v biases
        {"model_type": "qwen3", "tie_word_embeddings": False, "head_dim": 16},  # per-head q/k norms
    ],
)
def test_formula_matches_other_llama_family_models(config: dict) -> None:
    shape = {
        "vocab_size": 100,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    built = AutoConfig.for_model(**shape, **config)
    assert shape_from_config(built.to_dict()).parameters == count_parameters_on_meta(built)


def test_assumed_shape_of_a_bare_count() -> None:
    shape = assumed_shape(7_000_000_000)
    # 12 * 33 * 4224^2 + 32000 * 4224 = 7.20e9 is nearer 7e9 than 32 layers' 6.57e9
    assert (shape.layers, shape.hidden, shape.intermediate) == (33, 4224, 11264)
    assert shape.matmul_parameters == shape.parameters == 7_000_000_000


def test_lora_parameters_by_hand() -> None:
    # r * (d_in + d_out): q 8, k 6, v 6, o 8, gate 12, up 12, down 12 = 64 per layer at r=1
    assert lora_parameters(shape_from_config(HAND), 1) == 128
    assert lora_parameters(shape_from_config(HAND), 16) == 2048


def test_flops_per_token_by_hand() -> None:
    shape = shape_from_config(HAND)
    attention = 12 * 2 * 4 * 3  # 12 * layers * d_attn * seq_len = 288
    full = training_flops_per_token(shape, "full", seq_len=3, lora_r=1)
    assert full["total"] == 6 * 328 + attention == 2256
    lora = training_flops_per_token(shape, "lora", seq_len=3, lora_r=1)
    assert lora["total"] == 4 * 328 + 6 * 128 + attention == 2368
    qlora = training_flops_per_token(shape, "qlora", seq_len=3, lora_r=1)
    assert qlora["total"] == pytest.approx(4 * 328 * QLORA_DEQUANT_FACTOR + 6 * 128 + attention)
    checkpointed = training_flops_per_token(shape, "full", seq_len=3, lora_r=1, checkpointing=True)
    # one more forward of the layers (not the head): 2 * (328 - 40) + 4 * 2 * 4 * 3
    assert checkpointed["recompute"] == 576 + 96
    assert checkpointed["total"] == 2256 + 672


def test_memory_parts_by_hand() -> None:
    shape = shape_from_config(HAND)
    full = training_memory(shape, "full", "fp32", batch_size=2, seq_len=3, lora_r=1, checkpointing=False)
    # values per token per layer: 4*4 + 2*4 + 2*2 + 4*8 + 2 heads * 3 = 66; 6 tokens, 2 layers, 4 B
    assert full == {
        "weights": 348 * 4,
        "gradients": 348 * 4,
        "optimizer": 2 * 348 * 4,
        "adapters": 0,
        "activations": 6 * 2 * 66 * 4,
        "logits": 6 * 10 * 4 * 2,
        "overhead": GIB,
        "total": 1392 + 1392 + 2784 + 3168 + 480 + GIB,
    }
    qlora = training_memory(shape, "qlora", "fp32", batch_size=2, seq_len=3, lora_r=1, checkpointing=False)
    assert qlora["weights"] == pytest.approx(288 * NF4_BYTES + 60 * 4)
    assert round(NF4_BYTES, 4) == 0.5159
    assert (qlora["gradients"], qlora["optimizer"], qlora["adapters"]) == (512, 1024, 512)
    # LoRA keeps the dropped inputs and A outputs too: 66 + 5*4 + 4 + 8 + 7*1 = 105
    assert qlora["activations"] == 6 * 2 * 105 * 4
    checkpointed = training_memory(
        shape, "qlora", "fp32", batch_size=2, seq_len=3, lora_r=1, checkpointing=True
    )
    assert checkpointed["activations"] == 6 * (2 * 4 + 105) * 4  # layer inputs + one layer recomputed
    bf16 = training_memory(shape, "full", "bf16", batch_size=2, seq_len=3, lora_r=1, checkpointing=False)
    # trained weights and their optimizer states stay fp32 under autocast; activations halve; logits fp32
    assert (bf16["weights"], bf16["optimizer"], bf16["logits"]) == (1392, 2784, 480)
    assert bf16["activations"] == full["activations"] / 2
    frozen = training_memory(shape, "lora", "bf16", batch_size=2, seq_len=3, lora_r=1, checkpointing=False)
    assert frozen["weights"] == 348 * 2  # a frozen base is held in the compute precision


def test_time_and_money_of_a_method_by_hand() -> None:
    shape = assumed_shape(1_000_000_000)
    gpu = machine()
    result = estimate_method(shape, "lora", gpu, tokens=1_000_000, seq_len=512, batch_size=8, lora_r=16)
    per_token = training_flops_per_token(shape, "lora", 512, 16)["total"]
    assert result["seconds"] == pytest.approx(1e6 * per_token / (1e12 * 0.5))
    assert result["cost"] == pytest.approx(result["seconds"] / 3600 * 2.0)
    assert result["steps"] == math.ceil(1e6 / 4096)
    assert result["seconds_per_step"] == pytest.approx(4096 * per_token / 5e11)
    assert not result["checkpointing"] and result["fits"]


def test_checkpointing_is_switched_on_only_to_fit() -> None:
    shape = assumed_shape(1_000_000_000)
    args = (shape, "lora", "bf16", 8, 2048, 16)
    without = training_memory(*args, checkpointing=False)["total"]
    with_ = training_memory(*args, checkpointing=True)["total"]
    between = machine(memory=(without + with_) / 2)
    result = estimate_method(shape, "lora", between, tokens=10**6, seq_len=2048, batch_size=8, lora_r=16)
    assert result["checkpointing"] and result["fits"]
    assert result["flops_per_token"]["recompute"] > 0
    too_small = estimate_method(shape, "lora", machine(memory=with_ / 2), 10**6, 2048, 8, 16)
    assert not too_small["fits"]
    full = estimate_method(shape, "full", machine(memory=1e15), 10**6, 2048, 8, 16)
    assert full["checkpointing"]  # hone's own default on a GPU for full fine-tuning


def test_serving_and_requests_per_hour_by_hand() -> None:
    shape = assumed_shape(1_000_000_000)
    served = serving_throughput(shape, machine(), batch=8)
    # weights 2 GB in bf16: 8 * 1e11 / 2e9 = 400 tokens/s, but compute caps at 0.5e12 / 2e9 = 250
    assert served["weight_bytes"] == 2e9
    assert served["decode_tokens_per_second"] == pytest.approx(250)
    assert served["prefill_tokens_per_second"] == pytest.approx(250)
    assert serving_throughput(shape, machine(bandwidth=1e10), batch=8)["decode_tokens_per_second"] == 40
    # 200 prompt tokens at 400/s = 0.5 s, 50 decoded at 100/s = 0.5 s: one request a second
    assert requests_per_hour(200, 50, prefill_tps=400, decode_tps=100) == 3600


def test_break_even_by_hand() -> None:
    result = break_even(0.15, 0.60, 200, 50, requests_per_hour=3600, price_per_hour=0.10, training_cost=1.2)
    # API: (200 * 0.15 + 50 * 0.60) / 1e6 = $0.00006 a request; self-hosted: 0.10 * 730 + 1.2 / 12 = $73.10
    assert result["api_per_1000_requests"] == pytest.approx(0.06)
    assert result["self_hosted_per_month"] == pytest.approx(73.10)
    assert result["capacity_requests_per_month"] == 3600 * 730
    assert result["break_even_requests_per_month"] == pytest.approx(73.10 / 0.00006)  # 1,218,333
    assert result["self_hosted_per_1000_requests_at_capacity"] == pytest.approx(73.10 / 2_628_000 * 1000)
    slow = break_even(0.15, 0.60, 200, 50, requests_per_hour=1000, price_per_hour=0.10)
    assert slow["break_even_requests_per_month"] is None  # 1.22M needed, 730k possible


def test_named_gpus_and_overrides() -> None:
    h100 = gpu_hardware("H100")
    assert (h100.flops, h100.memory, h100.price_per_hour, h100.mfu) == (989e12, 80 * GIB, 3.00, 0.35)
    assert gpu_hardware("t4").precision == "fp16"
    custom = gpu_hardware("a100-80gb", mfu=0.5, price_per_hour=1.0)
    assert (custom.mfu, custom.price_per_hour) == (0.5, 1.0)
    with pytest.raises(HoneError, match=r"unknown hardware 'h9000'; expected cpu or one of h100, h200"):
        gpu_hardware("h9000")
    with pytest.raises(HoneError, match=r"--mfu 1.5"):
        hardware("h100", mfu=1.5)


def test_this_cpu_is_measured() -> None:
    cpu = hardware("cpu")
    assert cpu.flops > 1e9 and cpu.bandwidth > 1e8  # any machine that runs the tests does this much
    assert cpu.memory == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    expected = "bf16" if cpu_bf16_native() else "fp32"  # what hone trains in on this CPU
    assert (cpu.precision, cpu.mfu, cpu.price_per_hour) == (
        expected,
        CALIBRATED_CPU_MFU[expected],
        0.10,
    )
    assert expected in cpu.basis


def test_data_tokens_with_the_tokenizer_and_without(tiny_model_dir: Path, tmp_path: Path, tokenizer) -> None:
    chats = [
        [{"role": "user", "content": "Where is my parcel?"}, {"role": "assistant", "content": "On its way."}],
        [{"role": "user", "content": "Refund please"}, {"role": "assistant", "content": "Done."}],
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in chats))
    counted = count_data_tokens(data, str(tiny_model_dir))
    expected = sum(
        len(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False)) for chat in chats
    )
    assert counted["tokens"] == expected
    # no tokenizer for a bare size: ceil(characters / 4) of each example's text
    rough = count_data_tokens(data, "135M")
    assert rough["tokens"] == math.ceil(len("Where is my parcel?\nOn its way.") / 4) + math.ceil(
        len("Refund please\nDone.") / 4
    )
    data.write_text('{"messages": [{"role": "bot", "content": "x"}]}\n')
    with pytest.raises(HoneError, match=r"train.jsonl line 1: messages\[0\].role"):
        count_data_tokens(data, "135M")


def test_quickstart_step_estimate_against_the_measured_step() -> None:
    """LoRA SFT of SmolLM2-135M, batch 8 x ~215 tokens: 6.76 s/step measured on a 2-core CPU (RESULTS.md)."""
    shape = model_shape("smollm2-135m-instruct")
    cpu = hardware("cpu")
    step = estimate_method(shape, "lora", cpu, tokens=8 * 215, seq_len=215, batch_size=8, lora_r=16)
    per_token = 4 * 134_479_872 + 6 * lora_parameters(shape, 16) + 12 * 30 * 576 * 215
    assert step["flops_per_token"]["total"] == per_token
    print(
        f"\nquickstart LoRA step: estimated {step['seconds_per_step']:.2f} s at "
        f"{cpu.flops / 1e9:.0f} GFLOP/s measured x MFU {cpu.mfu} "
        f"({8 * 215 * per_token / 1e12:.3f} TFLOP/step), "
        f"{step['memory']['total'] / GIB:.1f} GiB; measured 6.76 s, 6.7 GiB peak RSS"
    )


def hone(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from hone.cli import main; main()", "estimate", *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def test_cli_json_for_a_named_gpu() -> None:
    result = hone("--json", "--model", "7B", "--hardware", "a100-80gb", "--tokens", "2M", "--method", "lora")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["methods"]) == ["lora"]
    assert report["tokens"]["total"] == 2_000_000
    lora = report["methods"]["lora"]
    assert lora["seconds"] == pytest.approx(2e6 * lora["flops_per_token"]["total"] / (312e12 * 0.35))
    assert report["break_even"]["lora"]["api_per_1000_requests"] == pytest.approx(0.06)


def test_cli_table_on_this_cpu() -> None:
    result = hone("--model", "135M", "--tokens", "100k", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    for text in ("Training", "full", "lora", "qlora", "Memory by part", "API vs self-hosting", "200k"):
        assert text in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--hardware", "h9000"), "unknown hardware 'h9000'"),
        (("--model", "1.5X"), "--model '1.5X': expected a positive count"),
        (("--method", "dora"), "--method 'dora': expected one of full, lora, qlora"),
        (("--tokens", "1M", "--data", "x.jsonl"), "give --tokens or --data, not both"),
    ],
)
def test_cli_bad_input_exits_2(args: tuple[str, ...], message: str) -> None:
    result = hone(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
