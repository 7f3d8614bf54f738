"""Attention for training on CPU: the eager computation with grouped heads and no fp32 round trips.

On CPU, torch's SDPA picks its flash kernel, whose backward is slow for the short sequences fine-tuning
sees (profiled: ~20% of a LoRA step of SmolLM2-135M at 8 x 215 tokens in bf16, more than the forward
and backward of all the model's linear layers' input gradients). transformers' eager attention is faster
there but repeats every key/value head for its query heads (a copy per layer), scales the scores and adds
the mask as separate passes, and takes the softmax in fp32 then casts back (two more copies of the
largest tensor in the layer). This function computes the same thing with the query heads of a key/value
head stacked into one matmul (no repeated keys or values), the scale folded into the queries (a tensor
1/3 the size of the scores), and the softmax in the activations' dtype: torch's CPU softmax accumulates
bf16 in fp32 and rounds once, the same as eager's fp32 softmax followed by its cast.

It is registered with transformers' attention and mask interfaces (the additive float mask of eager) and
switched on only around training for model types whose attention is plain scaled dot-product (no logit
soft-capping, no attention sinks): `cpu_attention(model)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hone.train.swap import language_model

NAME = "hone_cpu"

# Model types whose attention modules hand the attention function nothing beyond query/key/value, an
# additive mask, the scale and dropout (the mask carries any sliding window).
PLAIN_ATTENTION = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3"})


def grouped_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """softmax(q k^T * scaling + mask) v; (batch, heads, length, dim) in, (batch, length, heads, dim) out."""
    batch, heads, length, dim = query.shape
    kv_heads, kv_length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    # Query heads h = kv * groups + g share key/value head kv: stack each group's queries along the length.
    stacked = (query * scaling).reshape(batch, kv_heads, groups * length, dim)
    scores = torch.matmul(stacked, key.transpose(2, 3))
    if attention_mask is not None:
        mask = attention_mask[:, :, None, :, :kv_length].to(scores.dtype)  # (batch, 1, 1, length, kv)
        scores = (scores.view(batch, kv_heads, groups, length, kv_length) + mask).view_as(scores)
    weights = torch.softmax(scores, dim=-1)
    if dropout and module.training:
        weights = F.dropout(weights, p=dropout)
    output = torch.matmul(weights, value).view(batch, heads, length, dim)
    return output.transpose(1, 2).contiguous(), None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, grouped_attention)
    AttentionMaskInterface.register(NAME, eager_mask)


def supported(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    plain = getattr(config, "model_type", None) in PLAIN_ATTENTION
    return plain and hasattr(model, "set_attn_implementation")


@contextlib.contextmanager
def cpu_attention(model: nn.Module) -> Iterator[bool]:
    """Use grouped_attention inside the block where the model supports it; yields whether it does.

    The model's own attention implementation comes back afterwards, so evaluation, generation and the
    saved config are as they were.
    """
    inner = language_model(model)
    if not supported(inner):
        yield False
        return
    register()
    before = inner.config._attn_implementation
    inner.set_attn_implementation(NAME)
    try:
        yield True
    finally:
        inner.set_attn_implementation(before)
