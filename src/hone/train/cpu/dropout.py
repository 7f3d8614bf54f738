"""A cheaper LoRA dropout for training on CPU (`fast_dropout`).

PEFT applies `nn.Dropout` to the input of every LoRA adapter (`lora_dropout`). On CPU that is one
Mersenne-Twister draw per element (`bernoulli_`) and then boolean-mask arithmetic, which has no vector
kernel: with 210 adapted layers it took ~1.2 s of a 5 s LoRA step of SmolLM2-135M (profiled), more than
all the adapters' matmuls together. `FastDropout` instead:
- draws 64-bit words, splits each into four 16-bit lanes and compares them with one threshold (a quarter
  of the draws; each element dropped with probability p to within 2e-5). The words are SplitMix64's
  output for the states seed + i * golden ratio (3.5x faster than numpy's fastest generator, whose
  per-word function call runs on one core, and 7x faster than torch's Mersenne Twister). The seed is a
  draw from torch's generator, so `torch.manual_seed` fixes every mask;
- zeroes the dropped elements with a bitwise AND of the input's bits, read as int64 words, and masks whose
  elements are all ones or all zeros: drawing the words, comparing the lanes and applying the masks is one
  inductor-compiled loop on both cores (an 8 x 215 x 576 bf16 input in 0.39 ms instead of 0.46 for a
  random-word kernel, a comparison and an integer multiply; 1.02x per LoRA step in an in-process A/B),
  and backward applies the same masks to the gradient in place. Without a C++ compiler numpy's SFC64
  draws the words and torch applies them eagerly;
- leaves the 1/(1-p) rescaling to the adapter's matmul (hone.train.cpu.lora folds it into the adapter's
  scaling), saving a pass over the input forward and backward.
On CUDA PEFT's dropout stays: its Philox kernel is fast. The modules are swapped only inside
`fast_dropout(model)`; PEFT's own dropout modules come back afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hone.train.cpu.compiled import compiled, inductor_works
from hone.train.cpu.swap import modules_replaced

logger = logging.getLogger(__name__)

LEVELS = 1 << 16

# SplitMix64 (Steele, Lea & Flood, 2014), as signed int64 (torch has no unsigned 64-bit arithmetic on CPU):
# multiplications wrap alike, right shifts are made logical by masking off the sign's copies.
GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
MIX_1 = 0xBF58476D1CE4E5B9 - (1 << 64)
MIX_2 = 0x94D049BB133111EB - (1 << 64)


def _shifted(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(seed: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """SplitMix64's outputs for the states seed + i * GOLDEN, i the values of `counter`, as int64 bits.

    Counter-based, so one vectorised pass computes them all (compiled: one fused loop on every core).
    The counter is a tensor, not an arange inside the function: inductor would fold i * GOLDEN into its
    index arithmetic, which it computes in int32 when the first call's size is small (wrong words).
    """
    z = counter * GOLDEN + seed
    z = (z ^ _shifted(z, 30)) * MIX_1
    z = (z ^ _shifted(z, 27)) * MIX_2
    return z ^ _shifted(z, 31)


_COUNTER = torch.arange(0, dtype=torch.int64)


def counter(count: int) -> torch.Tensor:
    """0..count-1 as int64, a view of one arange kept for every mask (grown when a mask is larger)."""
    global _COUNTER
    if _COUNTER.numel() < count:
        _COUNTER = torch.arange(max(count, 2 * _COUNTER.numel()), dtype=torch.int64)
    return _COUNTER[:count]


def random_words(count: int) -> torch.Tensor:
    """`count` uniformly random int64 words on CPU, fixed by torch's seed (the fallback's source)."""
    seed = torch.randint(0, 1 << 62, (), dtype=torch.int64)
    return torch.from_numpy(np.random.SFC64(int(seed)).random_raw(count).view(np.int64))


def lane_ones(bits: int) -> list[int]:
    """For each element of `bits` width in an int64 word, the word with that element's bits all ones (as
    signed int64 values)."""
    lanes = [((1 << bits) - 1) << (bits * k) for k in range(64 // bits)]
    return [lane - (1 << 64) if lane >= 1 << 63 else lane for lane in lanes]


def lane_masks(words: torch.Tensor, threshold: int, ones: list[int]) -> torch.Tensor:
    """Masks shaped like `words`: element k of each word all ones (`ones[k]`) where the k-th 16-bit lane
    of the random word is >= threshold (kept), else zero (dropped)."""
    mask = torch.zeros_like(words)
    for k, lane_ones_k in enumerate(ones):
        lane = (words >> (16 * k)) & (LEVELS - 1)
        mask = mask | torch.where(lane >= threshold, lane_ones_k, 0)
    return mask


@functools.cache
def compiled_dropped_words(threshold: int, bits: int) -> Any:
    """(x's words with the dropped elements zeroed, the masks that did it) for x given as int64 words and
    the random words SplitMix64(seed, count), compiled as one loop over the words for this threshold and
    element width (closure constants: as arguments, dynamic shapes would make them symbolic and inductor
    would overflow on the lane masks' signed wrap-around)."""
    ones = lane_ones(bits)

    def dropped_words(
        x: torch.Tensor, seed: torch.Tensor, count: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = lane_masks(splitmix64(seed, count), threshold, ones)
        return x & mask, mask

    return compiled(dropped_words)


def as_words(t: torch.Tensor) -> torch.Tensor:
    """t's elements as int64 words (a view where t is contiguous and fills whole words, else a copy)."""
    flat = t.reshape(-1)
    per_word = 8 // t.element_size()
    if flat.numel() % per_word:
        flat = F.pad(flat, (0, per_word - flat.numel() % per_word))
    return flat.view(torch.int64)


def from_words(words: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return words.view(like.dtype)[: like.numel()].view(like.shape)


def dropped(x: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x with each element zeroed with probability p, to within 2e-5; the int64 masks that zero the same
    elements of a tensor like x, for `zero_dropped_`). Reproducible under torch's seed.

    Each random word carries four 16-bit lanes, one per element of x: a quarter of the draws. Zeroing is
    a bitwise AND of x's bits with the masks, so drawing the words, comparing the lanes and applying them
    is one compiled loop over x (8 bytes moved per bf16 element instead of 14 across three kernels).
    """
    words = as_words(x)
    threshold, bits = round(p * LEVELS), 8 * x.element_size()
    if x.device.type == "cpu" and inductor_works():
        seed = torch.randint(0, 1 << 62, (), dtype=torch.int64)
        kept, mask = compiled_dropped_words(threshold, bits)(words, seed, counter(words.numel()))
        return from_words(kept, x), mask
    if x.device.type == "cpu":
        random = random_words(words.numel())
    else:
        random = torch.empty_like(words).random_(-(1 << 63), None)
    mask = lane_masks(random, threshold, lane_ones(bits))
    return from_words(words & mask, x), mask


def zero_dropped_(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero, in place, the elements of t (contiguous, shaped like the masked tensor) that `dropped` did."""
    words = as_words(t)
    if words.data_ptr() == t.data_ptr():
        words.bitwise_and_(mask)
    else:  # a padded copy
        t.copy_(from_words(words & mask, t))
    return t


class _Dropped(torch.autograd.Function):
    """x with each element zeroed with probability p, forward and backward, without rescaling; saves
    only the masks."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        out, mask = dropped(x.contiguous(), p)
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (mask,) = ctx.saved_tensors
        return zero_dropped_(grad.contiguous().clone(), mask), None


class FastDropout(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    @property
    def rescale(self) -> float:
        """What the kept elements are multiplied by: 1/(1-p) in training, else 1."""
        return 1.0 / (1.0 - self.p) if self.training and self.p > 0 else 1.0

    @property
    def drops(self) -> float:
        """The probability an element is dropped now: p in training, else 0."""
        return self.p if self.training else 0.0

    def unscaled(self, x: torch.Tensor) -> torch.Tensor:
        """The dropout without its rescaling: the caller multiplies by `rescale` where it is cheaper."""
        return _Dropped.apply(x, self.p) if self.drops > 0 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drops == 0:
            return x
        return self.unscaled(x) * self.rescale

    def extra_repr(self) -> str:
        return f"p={self.p}"


def lora_dropouts(model: nn.Module) -> list[tuple[nn.ModuleDict, str, nn.Dropout]]:
    """(container, adapter name, module) for each of PEFT's LoRA dropouts that drops something."""
    found = []
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if type(dropout) is nn.Dropout and dropout.p > 0:
                found.append((dropouts, name, dropout))
    return found


@contextlib.contextmanager
def fast_dropout(model: nn.Module) -> Iterator[int]:
    """Inside the block PEFT's LoRA dropouts are FastDropout modules; yields how many were swapped.

    PEFT's own modules (the same objects) come back afterwards; neither has weights or state-dict entries.
    """
    found = lora_dropouts(model)
    if not found:
        logger.info("fast_dropout: no LoRA dropout with p > 0 in the model (lora_dropout 0 or no LoRA)")
    with modules_replaced([(dropouts, name, FastDropout(d.p)) for dropouts, name, d in found]) as swapped:
        yield swapped
