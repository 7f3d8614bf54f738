"""Each LoRA adapter added in place for training on CPU (`fused_lora`).

PEFT's LoRA layer computes `result + lora_B(lora_A(dropout(x))) * scaling`: after the base layer's output,
two more passes over a tensor of the output's size (the multiply and the add) and a third for their
results, forward and backward, for each of the 210 adapted layers. `fused_lora` adds the adapter into the
base layer's fresh output in place, `result += scaling * lora_A(dropout(x)) @ lora_B^T` as one GEMM with
beta 1, its backward handing the incoming gradient to the base layer as it is (`_AddLowRank`: torch's own
in-place addmm_ copies in its backward, its out-of-place addmm copies the result in its forward).
Where the base layer is a frozen nn.Linear in the compute dtype (hone's LoRA on CPU), base layer, dropout
and adapter are one autograd node (`_FrozenLinearWithLowRank`) whose backward zeroes the adapter's input
gradient in place and adds the base layer's into it within that GEMM (beta 1), instead of autograd adding
the two as fresh tensors. With hone.train.cpu.dropout's FastDropout the dropout is drawn inside that node
and its 1/(1-p) folded into the adapter's scaling.

This reads PEFT's LoRA layer attributes (lora_A/B, scaling, lora_dropout, lora_variant, merged): the
version bounds in pyproject.toml are where it was checked.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hone.train.cpu.dropout import FastDropout, dropped, zero_dropped_
from hone.train.cpu.swap import forwards_replaced

logger = logging.getLogger(__name__)


def low_rank_grads(
    rows: torch.Tensor, hidden: torch.Tensor, weight_b: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden's gradient, B's gradient) of `alpha * hidden @ B^T` whose gradient is `rows` (2-D)."""
    grad_hidden = rows @ (weight_b * alpha).to(rows.dtype)  # scaling the small matrix is free
    # (hidden^T grad)^T: the same product, 1.2x faster than grad^T hidden in oneDNN's skinny GEMM
    grad_b = (hidden.to(rows.dtype).t() @ rows).t().to(weight_b.dtype).mul_(alpha)
    return grad_hidden, grad_b


class _AddLowRank(torch.autograd.Function):
    """result += alpha * hidden @ weight_b.T, in place (result is the base layer's fresh output, which its
    backward does not need); the gradient passes to result unchanged, with no copy either way."""

    @staticmethod
    def forward(
        ctx: Any, result: torch.Tensor, hidden: torch.Tensor, weight_b: torch.Tensor, alpha: float
    ) -> torch.Tensor:
        ctx.mark_dirty(result)
        ctx.save_for_backward(hidden, weight_b)
        ctx.alpha = alpha
        rows = result.view(-1, result.size(-1))
        rows.addmm_(hidden.reshape(-1, hidden.size(-1)), weight_b.to(result.dtype).t(), alpha=alpha)
        return result

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        hidden, weight_b = ctx.saved_tensors
        rows = grad.reshape(-1, grad.size(-1))
        grad_hidden, grad_b = low_rank_grads(rows, hidden.reshape(-1, hidden.size(-1)), weight_b, ctx.alpha)
        return grad, grad_hidden.view(hidden.shape), grad_b, None


class _FrozenLinearWithLowRank(torch.autograd.Function):
    """base(x) + alpha * dropout_p(x) @ A^T @ B^T for a frozen base layer, as one autograd node.

    Autograd would add the base layer's input gradient and the adapter's as two fresh tensors (one more
    pass over the input's size per adapted layer, 210 here). This backward computes the adapter's part,
    zeroes the dropped elements in place, and adds the base layer's part into it within its GEMM (beta 1).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        p: float,
        weight_a: torch.Tensor,
        weight_b: torch.Tensor,
        alpha: float,
    ) -> torch.Tensor:
        rows = x.reshape(-1, x.size(-1))
        kept, mask = (rows, None) if p == 0 else dropped(rows, p)
        hidden = kept @ weight_a.to(x.dtype).t()
        result = F.linear(rows, weight, bias)
        result.addmm_(hidden, weight_b.to(x.dtype).t(), alpha=alpha)
        ctx.save_for_backward(weight, mask, kept, hidden, weight_a, weight_b)
        ctx.alpha = alpha
        return result.view(*x.shape[:-1], result.size(-1))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        weight, mask, kept, hidden, weight_a, weight_b = ctx.saved_tensors
        rows = grad.reshape(-1, grad.size(-1))
        grad_hidden, grad_b = low_rank_grads(rows, hidden, weight_b, ctx.alpha)
        grad_a = (grad_hidden.t() @ kept).to(weight_a.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_hidden @ weight_a.to(grad.dtype)
            if mask is not None:
                zero_dropped_(grad_x, mask)
            grad_x.addmm_(rows, weight)
            grad_x = grad_x.view(*grad.shape[:-1], grad_x.size(-1))
        return grad_x, None, None, None, grad_a, grad_b, None


def frozen_plain(base: nn.Module, x: torch.Tensor) -> bool:
    """Whether `base` is a plain nn.Linear with frozen weights in x's dtype, which x is computed in."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    if type(base) is not nn.Linear or base.weight.requires_grad or not base.weight.dtype == x.dtype == dtype:
        return False
    return base.bias is None or not base.bias.requires_grad


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """PEFT's lora.Linear forward for one plain adapter, added in place; anything else goes to PEFT's own."""
    active = self.active_adapters
    name = active[0] if len(active) == 1 else None
    plain = (
        name in self.lora_A
        and name not in self.lora_variant  # DoRA and the other variants
        and self.lora_B[name].bias is None
        and not (args or kwargs or self.disable_adapters or self.merged)
    )
    if not plain:
        return type(self).forward(self, x, *args, **kwargs)
    weight_a = self.lora_A[name].weight
    # Without autocast, PEFT casts between the input's and the adapter's dtypes; keep its path for that.
    if not (torch.is_autocast_enabled(x.device.type) or x.dtype == weight_a.dtype):
        return type(self).forward(self, x, *args, **kwargs)
    dropout, alpha = self.lora_dropout[name], self.scaling[name]
    base, weight_b = self.base_layer, self.lora_B[name].weight
    fast = isinstance(dropout, FastDropout)
    if fast:  # its 1/(1-p) goes into the adapter's scaling (1 where it drops nothing)
        alpha *= dropout.rescale
    if (fast or isinstance(dropout, nn.Identity)) and frozen_plain(base, x):
        p = dropout.drops if fast else 0.0
        return _FrozenLinearWithLowRank.apply(x, base.weight, base.bias, p, weight_a, weight_b, alpha)
    kept = dropout.unscaled(x) if fast else dropout(x)
    result = base(x)  # a fresh tensor (nn.Linear): the adapter may be added into it
    return _AddLowRank.apply(result, F.linear(kept, weight_a), weight_b, alpha)


def lora_linears(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora.layer import Linear

    return [m for m in model.modules() if type(m) is Linear and isinstance(m.base_layer, nn.Linear)]


def other_lora_layers(model: nn.Module, fused: list[nn.Module]) -> list[str]:
    """The class names of the model's LoRA layers that `fused_lora` leaves to PEFT."""
    from peft.tuners.lora.layer import LoraLayer

    chosen = {id(m) for m in fused}
    return [type(m).__name__ for m in model.modules() if isinstance(m, LoraLayer) and id(m) not in chosen]


@contextlib.contextmanager
def fused_lora(model: nn.Module) -> Iterator[int]:
    """Inside the block, PEFT's LoRA linear layers add their adapter in place; yields how many.

    The layers' own forward comes back afterwards; their weights and state dict are never touched. LoRA
    layers of other kinds (quantized or convolutional base layers, fan_in_fan_out) keep PEFT's forward,
    and the log says which.
    """
    layers = [m for m in lora_linears(model) if not getattr(m, "fan_in_fan_out", False)]
    others = other_lora_layers(model, layers)
    if others:
        kinds = ", ".join(sorted(set(others)))
        logger.warning(
            "fused_lora: %d LoRA layer(s) of kinds it does not fuse keep PEFT's forward: %s",
            len(others),
            kinds,
        )
    elif not layers:
        logger.info("fused_lora: no PEFT LoRA layers in the model (full fine-tuning, or no adapter)")
    with forwards_replaced([(layer, _fused_forward) for layer in layers]) as replaced:
        yield replaced
