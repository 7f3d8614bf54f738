"""Swapping a model's parts for the length of a block: how hone's CPU training kernels are switched on.

The kernels (hone.train.fast_lora, hone.train.compiled_ops) bind their own forward to chosen modules
inside a block and remove it afterwards, so the modules' classes, weights and state dicts never change
and evaluation, generation and saving see the modules as transformers and PEFT made them.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch import nn


def language_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@contextlib.contextmanager
def forwards_replaced(replacements: Sequence[tuple[nn.Module, Callable[..., Any]]]) -> Iterator[int]:
    """Inside the block each module runs its paired function as its forward; yields how many modules."""
    for module, forward in replacements:
        module.forward = types.MethodType(forward, module)
    try:
        yield len(replacements)
    finally:
        for module, _ in replacements:
            module.__dict__.pop("forward", None)
