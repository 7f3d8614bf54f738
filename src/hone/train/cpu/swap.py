"""Swapping a model's parts for the length of a block: how hone's CPU training kernels are switched on.

The kernels (hone.train.cpu) bind their own forward to chosen modules, put their own modules or functions
in place of transformers' and PEFT's, inside a block, and put the originals back afterwards, so the
modules' classes, weights and state dicts never change and evaluation, generation and saving see the
model as transformers and PEFT made it.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch import nn

_MISSING = object()

# (id(owner), name) -> [owner, original value, blocks using the swap]; owner kept so its id stays its own.
_SHARED: dict[tuple[int, str], list[Any]] = {}


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


@contextlib.contextmanager
def modules_replaced(replacements: Sequence[tuple[nn.ModuleDict, str, nn.Module]]) -> Iterator[int]:
    """Inside the block `container[name]` is the paired module; the original module objects come back
    afterwards. Yields how many."""
    originals = [(container, name, container[name]) for container, name, _ in replacements]
    for container, name, module in replacements:
        container[name] = module
    try:
        yield len(replacements)
    finally:
        for container, name, original in originals:
            container[name] = original


def _read(owner: Any, name: str) -> Any:
    return owner.get(name, _MISSING) if isinstance(owner, dict) else getattr(owner, name, _MISSING)


def _write(owner: Any, name: str, value: Any) -> None:
    if isinstance(owner, dict):
        if value is _MISSING:
            owner.pop(name, None)
        else:
            owner[name] = value
    elif value is _MISSING:
        delattr(owner, name)
    else:
        setattr(owner, name, value)


@contextlib.contextmanager
def shared_swap(owner: Any, name: str, value: Any) -> Iterator[None]:
    """`owner.name` (`owner[name]` for a dict) is `value` inside the block, the original afterwards.

    For what a whole process shares (a modeling module's function, a registry of transformers): blocks on
    the same name that overlap, for two models of one family, share one swap; the first sets it and the
    last to end puts the original back, in whatever order they end.
    """
    key = (id(owner), name)
    if key in _SHARED:
        _SHARED[key][2] += 1
    else:
        _SHARED[key] = [owner, _read(owner, name), 1]
        _write(owner, name, value)
    try:
        yield
    finally:
        entry = _SHARED[key]
        entry[2] -= 1
        if entry[2] == 0:
            del _SHARED[key]
            _write(owner, name, entry[1])
