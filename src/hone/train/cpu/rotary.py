"""The rotary position embedding for training on CPU: each half of the output in two passes, one node.

transformers applies it as `q * cos + rotate_half(q) * sin`, where rotate_half slices, negates and
concatenates a copy of q: five passes over the query (and the key) tensor forward, and autograd's backward
runs as many again plus the sum of the two paths' gradients. Here each half of the output is one multiply
and one fused multiply-add written straight into it (x1*c1 - x2*s1 and x2*c2 + x1*s2), and the backward
is the same with the rotation transposed, in one autograd node: 1.08x on a LoRA step of SmolLM2-135M in an
in-process A/B (benchmarks/RESULTS.md). It holds for any cos and sin (it does not assume their halves are
equal), and rounds twice per element in bf16 instead of three times.

`fused_rotary(model)` swaps it in, for the length of a block, for the model families whose
apply_rotary_pos_emb is llama's; anything it does not cover (cos/sin of another dtype or needing gradients,
extra arguments) goes to transformers' own. The swap is of the modeling module's function, which every
model of that family in the process looks up while the block lasts (the same values up to rounding);
transformers' function comes back when the last such block ends.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from hone.train.cpu.swap import language_model, shared_swap

logger = logging.getLogger(__name__)

# Model types whose modeling module's apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim) is llama's.
ROTARY_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3"})


def _rotate_into(out: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: int) -> None:
    """out = x * cos + sign * rotate_half(x) * sin, rotate_half(x) = (-x2, x1), written half by half.

    sign -1 gives the transposed rotation (the backward's): out1 = x1*c1 + x2*s2, out2 = x2*c2 - x1*s1.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    sin1, sin2 = (sin[..., :half], sin[..., half:]) if sign > 0 else (sin[..., half:], sin[..., :half])
    torch.mul(x1, cos[..., :half], out=out[..., :half]).addcmul_(x2, sin1, value=-sign)
    torch.mul(x2, cos[..., half:], out=out[..., half:]).addcmul_(x1, sin2, value=sign)


class _Rotation(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        _rotate_into(out, x, cos, sin, 1)
        ctx.save_for_backward(cos, sin)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        cos, sin = ctx.saved_tensors
        out = torch.empty_like(grad)
        _rotate_into(out, grad, cos, sin, -1)
        return out, None, None


def rotated(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin (cos and sin broadcast to x)."""
    return _Rotation.apply(x, cos, sin)


def halfwise(original: Callable[..., Any]) -> Callable[..., Any]:
    """apply_rotary_pos_emb by `rotated`, falling back to `original` for anything else."""

    def apply_rotary_pos_emb(
        q: torch.Tensor,
        k: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        unsqueeze_dim: int = 1,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        plain = not kwargs and q.shape[-1] % 2 == 0 and q.dtype == k.dtype == cos.dtype == sin.dtype
        if not plain or cos.requires_grad or sin.requires_grad:
            return original(q, k, cos, sin, unsqueeze_dim, **kwargs)
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        return rotated(q, cos, sin), rotated(k, cos, sin)

    return apply_rotary_pos_emb


@contextlib.contextmanager
def fused_rotary(model: nn.Module) -> Iterator[bool]:
    """Inside the block the model's family applies its rotary embedding by `rotated`; yields whether it does.

    The swap is of the modeling module's function (the attention layers look it up on every call), and
    the original comes back afterwards.
    """
    inner = language_model(model)
    family = getattr(getattr(inner, "config", None), "model_type", None)
    module = sys.modules.get(type(inner).__module__)
    original = getattr(module, "apply_rotary_pos_emb", None)
    if family not in ROTARY_FAMILIES or original is None:
        why = (
            f"model type {family!r} is not one whose apply_rotary_pos_emb is llama's"
            if family not in ROTARY_FAMILIES
            else f"{type(inner).__module__} has no apply_rotary_pos_emb"
        )
        logger.warning("rotary: %s; transformers' own rotary embedding trains", why)
        yield False
        return
    with shared_swap(module, "apply_rotary_pos_emb", halfwise(original)):
        yield True
