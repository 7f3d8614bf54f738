"""The decoder layer's elementwise chains compiled into single kernels, for training on CPU.

RMSNorm (upcast, square, mean, rsqrt, two multiplies, downcast) and the SwiGLU product silu(gate) * up
are chains of small elementwise passes, each one a trip through memory, and their backward passes twice
as many; on CPU, where memory bandwidth and per-op overhead dominate at fine-tuning sizes, they took
~15% of a LoRA step of SmolLM2-135M. Compiling the whole model (torch.compile) fuses them too but costs
~35 s of compilation, recompiles for every new padded length and breaks its graph at PEFT's layers; it
paid only after 100-250 steps. Here only these two pure functions are compiled (inductor, dynamic shapes:
one compilation per dtype for every batch size and length), ~9 s once per process, and each runs forward
and backward as one fused loop: measured 6x faster for the norm and 2x for the product, 1.07-1.13x for the
whole step.

The computations are transformers' own (LlamaRMSNorm and LlamaMLP's forward, written out below), so the
results match up to float rounding. They replace the modules' forward only inside `compiled_layers`, for
the model types whose norms and MLPs have exactly these forms, and only where inductor can compile on
this machine (it needs a C++ compiler; `inductor_works` tries once).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hone.train.cpu.attention import PLAIN_ATTENTION
from hone.train.cpu.swap import forwards_replaced, language_model

logger = logging.getLogger(__name__)

# Model types whose RMSNorm is weight * normalised(x in fp32).to(x's dtype) and whose MLP is
# down(act(gate(x)) * up(x)): the families of hone.train.cpu.attention.
FAMILIES = PLAIN_ATTENTION - {"phi3"}  # phi3's MLP has one fused gate_up projection


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm.forward."""
    hidden = x.to(torch.float32)
    hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)
    return weight * hidden.to(x.dtype)


def silu_product(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """act_fn(gate_proj(x)) * up_proj(x) of LlamaMLP.forward with SiLU."""
    return F.silu(gate) * up


# Each dtype, gradient requirement and size-1 dimension is one compiled variant. Past dynamo's limit
# (8 per function) new variants silently run eager: in a process that trains several times that mixes
# compiled and eager roundings, and DPO's reference and policy passes must round alike (its first-step
# margins are exactly 0). 64 covers every combination hone's methods and precisions produce.
RECOMPILE_LIMIT = 64


@functools.cache
def compiled(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    import torch._dynamo.config

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    # Round at every cast as eager does (bf16 norms then differ from eager by float reduction order only).
    return torch.compile(function, dynamic=True, options={"emulate_precision_casts": True})


@functools.cache
def inductor_works() -> bool:
    """Whether inductor compiles and runs a function with its backward here (it needs a C++ compiler).

    Asked once per process, perhaps first under torch.no_grad (a block entered for evaluation): the probe
    turns gradients on itself, or it would fail there and keep the answer for good.
    """
    try:
        x = torch.ones(4, 3, requires_grad=True)
        with torch.enable_grad():
            torch.compile(lambda t: (t * 2).sum(), dynamic=True)(x).backward()
        return bool(x.grad is not None and x.grad.eq(2).all())
    except Exception:  # any failure means: keep the eager modules
        return False


def _norm_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    return compiled(rms_norm)(x, self.weight, self.variance_epsilon)


def _mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(compiled(silu_product)(self.gate_proj(x), self.up_proj(x)))


def silu(module: object) -> bool:
    from transformers.activations import SiLUActivation

    return isinstance(module, (nn.SiLU, SiLUActivation))


def swiglu(module: nn.Module) -> bool:
    parts = ("gate_proj", "up_proj", "down_proj")
    return all(hasattr(module, p) for p in parts) and silu(getattr(module, "act_fn", None))


def rms(module: nn.Module) -> bool:
    return type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")


def fusable(model: nn.Module) -> list[tuple[nn.Module, Callable[..., torch.Tensor]]]:
    """The (module, forward) pairs of `model` that compiled_layers replaces; the log names what it leaves."""
    inner = language_model(model)
    family = getattr(getattr(inner, "config", None), "model_type", None)
    if family not in FAMILIES:
        logger.warning(
            "compiled_ops: model type %r is not one whose norms and MLPs it computes (%s); they stay eager",
            family,
            ", ".join(sorted(FAMILIES)),
        )
        return []
    found: list[tuple[nn.Module, Callable[..., torch.Tensor]]] = []
    unknown: set[str] = set()
    for module in inner.modules():
        if rms(module):
            found.append((module, _norm_forward))
        elif swiglu(module):
            found.append((module, _mlp_forward))
        elif type(module).__name__.endswith(("RMSNorm", "MLP")):
            unknown.add(type(module).__name__)
    if unknown:
        logger.warning(
            "compiled_ops: %s not of the RMSNorm/SwiGLU forms it computes; they stay eager",
            ", ".join(sorted(unknown)),
        )
    return found


@contextlib.contextmanager
def compiled_layers(model: nn.Module) -> Iterator[int]:
    """Inside the block the model's RMSNorms and SwiGLU MLPs run compiled; yields how many modules.

    Their own forward comes back afterwards; no weight or state-dict entry is touched.
    """
    works = inductor_works()
    if not works:
        logger.warning(
            "compiled_ops: inductor cannot compile here (it needs a C++ compiler); norms and MLPs stay eager"
        )
    with forwards_replaced(fusable(model) if works else []) as replaced:
        yield replaced
