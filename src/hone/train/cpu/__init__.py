"""hone's kernels for training on CPU, behind one switch: `with cpu_kernels(model, names) as applied:`.

Each kernel swaps something of transformers' or PEFT's for the length of the block and puts the original
back when it ends, so evaluation, generation and saving see the model exactly as it was made:

  fast_dropout   (.dropout) PEFT's LoRA dropout modules -> FastDropout, a compiled SplitMix64 mask
  fused_lora     (.lora) PEFT's LoRA linear forward -> the adapter added in place, one autograd node
  attention      (.attention) the model's attention implementation -> grouped-head attention
  rotary         (.rotary) the family's apply_rotary_pos_emb -> written half by half in one node
  compiled_ops   (.compiled) the RMSNorm and SwiGLU MLP forwards -> inductor-compiled kernels

Each measured in benchmarks/lora_step.py (benchmarks/RESULTS.md). A kernel that does not apply to the
model (its family, a layer kind it does not know, no C++ compiler) leaves it as it is, says why in the
log, and is not among the names the block yields. `train.cpu_kernels` chooses them for `hone train`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Literal

from torch import nn

from hone.train.cpu.attention import cpu_attention
from hone.train.cpu.compiled import compiled_layers
from hone.train.cpu.dropout import fast_dropout
from hone.train.cpu.lora import fused_lora
from hone.train.cpu.rotary import fused_rotary

logger = logging.getLogger(__name__)

# Each kernel's block yields what it changed (a count, or whether it applies); nothing means it does not.
KERNELS: dict[str, Callable[[nn.Module], AbstractContextManager[int | bool]]] = {
    "fast_dropout": fast_dropout,
    "fused_lora": fused_lora,
    "attention": cpu_attention,
    "rotary": fused_rotary,
    "compiled_ops": compiled_layers,
}  # the config's CPU_KERNELS, in the order they are applied


def selected(kernels: Literal["auto", "off"] | Sequence[str]) -> list[str]:
    """The kernel names `kernels` asks for, in the order they are applied (auto: all; off: none)."""
    if kernels == "auto":
        return list(KERNELS)
    if kernels == "off":
        return []
    if isinstance(kernels, str):
        kernels = [kernels]
    unknown = [name for name in kernels if name not in KERNELS]
    if unknown:
        raise ValueError(
            f"unknown CPU kernel(s) {', '.join(map(repr, unknown))}; expected auto, off or some of: "
            f"{', '.join(KERNELS)}"
        )
    return [name for name in KERNELS if name in kernels]


def device_of(model: nn.Module) -> str:
    """Where the model's weights are: cpu, cuda, ... (cpu for a model without any)."""
    devices = {parameter.device.type for parameter in model.parameters()}
    return "cpu" if devices <= {"cpu"} else ", ".join(sorted(devices - {"cpu"}))


@contextlib.contextmanager
def cpu_kernels(
    model: nn.Module, kernels: Literal["auto", "off"] | Sequence[str] = "auto"
) -> Iterator[list[str]]:
    """Inside the block the model trains with the chosen CPU kernels that apply to it; yields their names.

    `kernels`: auto (each one that applies), off (none: transformers' and PEFT's own behaviour), or names
    from KERNELS. A model whose weights are not on the CPU gets none. Everything is put back on exit, also
    when the block raises.
    """
    names = selected(kernels)
    device = device_of(model)
    if names and device != "cpu":
        logger.info("cpu kernels: the model is on %s; transformers' and PEFT's own layers train", device)
        names = []
    applied: list[str] = []
    with contextlib.ExitStack() as stack:
        for name in names:
            if stack.enter_context(KERNELS[name](model)):
                applied.append(name)
        if names:
            logger.info("cpu kernels applied: %s", ", ".join(applied) or "none")
        yield applied
