"""Random-weight models in public shapes, for throughput benchmarks on machines that reach no model hub.

Training speed depends on a model's shapes (hidden size, layers, heads, vocabulary), not on its weights,
so a benchmark of a 1B-parameter shape needs no download: the architecture is built from its published
configuration with random weights and saved next to the default model's tokenizer (49,152 tokens, all
below every shape's vocabulary, so its ids index the larger embedding). Loss values of such a model say
nothing about quality; comparing configurations trained from the same random weights stays fair.

Also the floating-point work of a training step, for model FLOP utilisation (MFU): per trained token,
2 FLOPs per weight of every matrix product forward, 2 more backward for the input's gradient, and 2 more
for the weight's gradient when the weights train (full fine-tuning; LoRA's adapters are negligible):
4N (LoRA) or 6N (full), N the weights of the linear layers and the language-model head (the input
embedding is a lookup). Attention adds, per layer, QK^T and PV over the keys each token sees (causal:
position i sees i + 1), 2 x 2 x attention width FLOPs per key forward, three times that with backward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# Published configurations (config.json of each model), the fields that set the compute.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "rope_theta": 1000000.0,
    },
    "llama-3.2-1b": {
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
    },
    "qwen2.5-1.5b": {
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "rope_theta": 1000000.0,
    },
    "llama-3.1-8b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "rope_theta": 500000.0,
    },
    # SmolLM2-135M's own shape with random weights: the CPU benchmark's model, for a like-for-like check
    "smollm2-135m": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "rope_theta": 100000.0,
    },
}

# Dense bf16 peak of the GPUs hone is measured on, in FLOP/s (vendor data sheets, without sparsity).
PEAK_BF16 = {
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
}


def write_random_model(shape: str, folder: Path, tokenizer_from: Path, device: str = "cpu") -> Path:
    """Save a random-weight bf16 model of `shape` with the tokenizer of `tokenizer_from` into `folder`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    fields = dict(SHAPES[shape])
    if len(tokenizer) > fields["vocab_size"]:
        raise ValueError(f"{shape}: the tokenizer's {len(tokenizer)} tokens exceed its vocabulary")
    config = AutoConfig.for_model(
        fields.pop("model_type"),
        **fields,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it will train: a GPU draws 8B weights in seconds
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def linear_weights(config: Any) -> int:
    """Weights of every matrix product of one token's forward pass: attention and MLP projections of
    every layer and the language-model head (tied or not, it is one product), biases left out."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    query = config.num_attention_heads * head_dim(config)
    key_value = config.num_key_value_heads * head_dim(config)
    attention = hidden * query * 2 + hidden * key_value * 2  # q and o; k and v
    mlp = 3 * hidden * config.intermediate_size  # gate, up, down
    return layers * (attention + mlp) + hidden * config.vocab_size


def training_flops(config: Any, tokens: int, attention_pairs: int, full: bool = False) -> float:
    """FLOPs of one training pass over `tokens` tokens whose causal attention computes `attention_pairs`
    (query, key) pairs (an example of n tokens has n(n+1)/2)."""
    width = config.num_attention_heads * head_dim(config)
    attention = 3 * 2 * 2 * width * attention_pairs * config.num_hidden_layers
    return (6 if full else 4) * linear_weights(config) * tokens + attention


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name (torch.cuda.get_device_name), if known."""
    for name, peak in PEAK_BF16.items():  # the most specific name first ("H100 PCIe" before "H100")
        if name in device_name:
            return peak
    return None
