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

Padding-free batches (every example of the batch in one row, each with its own positions, and the sequence
boundaries `cu_seq_lens_q` of TRL's padding-free collator) are laid out again as one padded row per
example inside the attention only (`Segments`): the linear layers, norms, MLP, rotary embedding and LoRA
dropout, most of a step, then run on the batch's tokens alone instead of padded rows, and the attention
still costs what it costs over padded rows (a causal mask per example), not the quadratic cost of the
whole row that transformers' block-diagonal mask gives (packed examples never see one another either way).

It is registered with transformers' attention and mask interfaces (the additive float mask of eager) and
switched on only around training for model types whose attention is plain scaled dot-product (no logit
soft-capping, no attention sinks) and layer kinds (full and sliding-window attention):
`cpu_attention(model)`. The registration and the model's attention implementation come back afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hone.train.cpu.swap import language_model, shared_swap

logger = logging.getLogger(__name__)

NAME = "hone_cpu"

# Model types whose attention modules hand the attention function nothing beyond query/key/value, an
# additive mask, the scale and dropout (the mask carries any sliding window).
PLAIN_ATTENTION = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3"})

# The kinds of layer (config.layer_types) whose mask is eager's additive one, with any window in it.
LAYER_TYPES = frozenset({"full_attention", "sliding_attention"})


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
    segments = Segments.of(kwargs.get("cu_seq_lens_q"), query, getattr(module, "sliding_window", None))
    if segments is not None:
        query, key, value = (segments.padded(t) for t in (query, key, value))
        attention_mask = segments.mask
    batch, heads, length, dim = query.shape
    kv_heads, kv_length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    # Query heads h = kv * groups + g share key/value head kv: stack each group's queries along the length.
    stacked = (query * scaling).reshape(batch, kv_heads, groups * length, dim)
    scores = torch.matmul(stacked, key.transpose(2, 3))
    if attention_mask is not None:
        mask = attention_mask[:, :, None, :, :kv_length]  # (batch, 1, 1, length, kv)
        # fp32's lowest value rounds to -inf in bf16, and a row whose keys are all masked (a sliding window
        # over padding) would softmax to NaN: clamp it to bf16's lowest first, as eager's fp32 sum keeps it.
        if mask.dtype != scores.dtype:
            mask = mask.clamp(min=torch.finfo(scores.dtype).min).to(scores.dtype)
        scores = (scores.view(batch, kv_heads, groups, length, kv_length) + mask).view_as(scores)
    weights = torch.softmax(scores, dim=-1)
    if dropout and module.training:
        weights = F.dropout(weights, p=dropout)
    output = torch.matmul(weights, value).view(batch, heads, length, dim)
    if segments is not None:
        return segments.flat(output), None
    return output.transpose(1, 2).contiguous(), None


class _Gathered(torch.autograd.Function):
    """Rows `index` of a 2-D tensor; in backward, row i of the source gets the gradient of output row
    `back[i]`, or zero where `back[i]` is the output's length (with `zero_row`). The two index tensors are
    inverse maps on the rows that matter, so no gradient is added up (index_select's own backward would
    scatter-add serially)."""

    @staticmethod
    def forward(
        ctx: Any, source: torch.Tensor, index: torch.Tensor, back: torch.Tensor, zero_row: bool
    ) -> torch.Tensor:
        ctx.save_for_backward(back)
        ctx.zero_row = zero_row
        return source.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (back,) = ctx.saved_tensors
        if ctx.zero_row:  # `back` points padding at row len(grad): make it a zero row
            grad = torch.cat([grad, grad.new_zeros(1, grad.size(1))])
        return grad.index_select(0, back), None, None, None


class Segments:
    """The examples of a padding-free row (sequence starts `starts`, a batch of one row) as one padded
    row each, for the attention: its queries, keys and values are gathered into (examples, heads, longest,
    dim) and its output back into the row's layout. Made once per forward pass and reused by every layer
    (the boundaries are the same tensor for all of them)."""

    # The boundaries of the current forward pass, and a layout per (dtype, sliding window) of its layers.
    _cache: tuple[Any, dict[tuple[torch.dtype, int | None], Segments]] | None = None

    def __init__(self, starts: torch.Tensor, dtype: torch.dtype, window: int | None) -> None:
        self.window = window  # the layers this mask is for (Qwen2 mixes sliding and full ones)
        bounds = starts.tolist()
        lengths = [end - start for start, end in itertools.pairwise(bounds)]
        self.total, self.count, self.longest = bounds[-1], len(lengths), max(lengths)
        slot = torch.arange(self.longest)
        valid = slot[None, :] < torch.tensor(lengths)[:, None]  # (examples, longest)
        rows = starts[:-1, None].long() + slot[None, :]
        self.slots = rows.where(valid, 0).reshape(-1)  # padded slot -> row of the flat batch (0: padding)
        self.slots_or_end = rows.where(valid, self.total).reshape(-1)  # (total: padding)
        self.rows = valid.reshape(-1).nonzero().squeeze(1)  # row of the flat batch -> its padded slot
        allowed = valid[:, None, :] & (slot[None, :, None] >= slot[None, None, :])  # causal, no padded keys
        if window is not None:
            allowed = allowed & (slot[None, :, None] - slot[None, None, :] < window)
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        self.mask = mask[:, None]  # (examples, 1, longest, longest), eager's additive mask

    @classmethod
    def of(cls, starts: torch.Tensor | None, query: torch.Tensor, window: int | None) -> Segments | None:
        """The layout for a padding-free batch of several examples, or None for anything else."""
        if starts is None or query.size(0) != 1 or starts.numel() < 3 or query.device.type != "cpu":
            return None
        if cls._cache is None or cls._cache[0] is not starts:
            cls._cache = (starts, {})
        layouts, key = cls._cache[1], (query.dtype, window)
        if key not in layouts:
            layouts[key] = cls(starts, query.dtype, window)
        return layouts[key]

    def padded(self, t: torch.Tensor) -> torch.Tensor:
        """(1, heads, total, dim) -> (examples, heads, longest, dim)."""
        heads, dim = t.size(1), t.size(3)
        rows = t[0].transpose(0, 1).reshape(self.total, heads * dim)  # a view if t is (1, total, ...)'s
        gathered = _Gathered.apply(rows, self.slots, self.rows, False)
        return gathered.view(self.count, self.longest, heads, dim).transpose(1, 2)

    def flat(self, output: torch.Tensor) -> torch.Tensor:
        """(examples, heads, longest, dim) -> (1, total, heads, dim): what attention functions return."""
        heads, dim = output.size(1), output.size(3)
        slots = output.transpose(1, 2).reshape(self.count * self.longest, heads * dim)
        return _Gathered.apply(slots, self.rows, self.slots_or_end, True).view(1, self.total, heads, dim)


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """grouped_attention and eager's mask under NAME in transformers' registries, for the block.

    The registries are process-wide dicts (transformers' `_global_mapping`); the entries go again when the
    last block using them ends.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    with (
        shared_swap(AttentionInterface._global_mapping, NAME, grouped_attention),
        shared_swap(AttentionMaskInterface._global_mapping, NAME, eager_mask),
    ):
        yield


def unsupported(model: nn.Module) -> str | None:
    """Why grouped_attention cannot train this (transformers) model, or None where it can."""
    config = getattr(model, "config", None)
    family = getattr(config, "model_type", None)
    if family not in PLAIN_ATTENTION:
        known = ", ".join(sorted(PLAIN_ATTENTION))
        return f"model type {family!r} is not one whose attention it computes ({known})"
    if not hasattr(model, "set_attn_implementation"):
        return f"{type(model).__name__} cannot switch its attention implementation"
    unknown = sorted(set(getattr(config, "layer_types", None) or []) - LAYER_TYPES)
    if unknown:
        return f"layer types {', '.join(unknown)} are not ones it computes ({', '.join(sorted(LAYER_TYPES))})"
    return None


def supported(model: nn.Module) -> bool:
    return unsupported(model) is None


@contextlib.contextmanager
def cpu_attention(model: nn.Module) -> Iterator[bool]:
    """Use grouped_attention inside the block where the model supports it; yields whether it does.

    The model's own attention implementation comes back afterwards, so evaluation, generation and the
    saved config are as they were; where it does not apply the log says why.
    """
    inner = language_model(model)
    reason = unsupported(inner)
    if reason is not None:
        logger.warning(
            "attention: %s; the model's own attention (%s) trains",
            reason,
            getattr(getattr(inner, "config", None), "_attn_implementation", None),
        )
        yield False
        return
    before = inner.config._attn_implementation
    with registered():
        inner.set_attn_implementation(NAME)
        try:
            yield True
        finally:
            inner.set_attn_implementation(before)
            Segments._cache = None  # the last batch's boundaries and layouts
