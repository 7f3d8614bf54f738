"""hone.train.cpu.dropout: SplitMix64's words, masks that drop p of every lane, reproducible under the
seed, and FastDropout in place of PEFT's LoRA dropout only inside its block."""

from __future__ import annotations

import math

import pytest
import torch

import hone.train.cpu.dropout
from hone.train.cpu.compiled import compiled, inductor_works
from hone.train.cpu.dropout import (
    FastDropout,
    compiled_dropped_words,
    counter,
    dropped,
    fast_dropout,
    lane_masks,
    lane_ones,
    random_words,
    splitmix64,
    zero_dropped_,
)

WORD = (1 << 64) - 1


def reference_splitmix64(state: int, count: int) -> list[int]:
    """SplitMix64 as published (unsigned 64-bit), outputs for the states state + i * golden ratio."""
    out = []
    for i in range(count):
        z = (state + i * 0x9E3779B97F4A7C15) & WORD
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & WORD
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & WORD
        out.append(z ^ (z >> 31))
    return out


@pytest.mark.parametrize("compile_it", [False, True])
def test_splitmix64_gives_the_published_generator_s_words(compile_it: bool) -> None:
    if compile_it and not inductor_works():
        pytest.skip("inductor cannot compile here")
    function = compiled(splitmix64) if compile_it else splitmix64
    # small first: inductor picks its index width from the first call's size
    for count, state in ((37, 0), (37, 12345), (1000, (1 << 62) - 7), (5000, 99)):
        words = function(torch.tensor(state), torch.arange(count))
        assert [w & WORD for w in words.tolist()] == reference_splitmix64(state, count)
    # SplitMix64 seeded with 0 starts 0xE220A8397B1DCDAF: its first state is 0 + golden
    first = function(torch.tensor(0x9E3779B97F4A7C15 - (1 << 64)), torch.arange(1))
    assert int(first) & WORD == 0xE220A8397B1DCDAF


def test_without_a_compiler_the_words_come_from_numpy_and_still_follow_the_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hone.train.cpu.dropout, "inductor_works", lambda: False)
    torch.manual_seed(11)
    first = random_words(1000)
    torch.manual_seed(11)
    assert torch.equal(first, random_words(1000)) and first.dtype == torch.int64
    count = 200_000
    out, _ = dropped(torch.ones(count), 0.05)
    assert abs((out == 0).double().mean().item() - 0.05) < 5 * math.sqrt(0.05 * 0.95 / count)
    torch.manual_seed(4)
    again = dropped(torch.ones(64, 32), 0.3)[0]
    torch.manual_seed(4)
    assert torch.equal(again, dropped(torch.ones(64, 32), 0.3)[0])


@pytest.mark.parametrize("bits", [16, 32])
def test_the_compiled_masks_are_the_lanes_of_splitmix64_s_words(bits: int) -> None:
    if not inductor_works():
        pytest.skip("inductor cannot compile here")
    kernel = compiled_dropped_words(round(0.3 * 65536), bits)
    for count in (5, 37, 4001):  # small first: inductor picks its index width from the first call's size
        words = torch.randint(-(1 << 62), 1 << 62, (count,), dtype=torch.int64)
        seed = torch.tensor(987654321)
        kept, mask = kernel(words, seed, counter(count))
        expected = lane_masks(splitmix64(seed, torch.arange(count)), round(0.3 * 65536), lane_ones(bits))
        assert torch.equal(mask, expected) and torch.equal(kept, words & expected)
        lanes = mask.view(torch.int16 if bits == 16 else torch.int32)
        assert set(lanes.unique().tolist()) == {0, -1}  # each element all ones (kept) or all zeros


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dropout_drops_p_of_every_lane(p: float, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    count = 400_003  # not a whole number of words: the last word is padded
    x = torch.ones(count, dtype=dtype)
    out, mask = dropped(x, p)
    per_word = 8 // x.element_size()
    assert out.shape == x.shape and out.dtype == dtype and mask.shape == (-(-count // per_word),)
    assert set(out.unique().tolist()) == {0.0, 1.0}
    for lane in range(per_word):  # the 16-bit lanes of each random word come from different bits
        share = (out[lane::per_word] == 0).double().mean().item()
        spread = 5 * math.sqrt(p * (1 - p) / (count / per_word))  # five standard errors
        assert abs(share - p) < spread, (lane, share)
    gradient = zero_dropped_(torch.full_like(x, 2.0), mask)  # the same elements of a gradient
    assert torch.equal(gradient == 0, out == 0)


def test_dropout_is_reproducible_under_the_seed_and_varies_without_it() -> None:
    x = torch.randn(64, 32, dtype=torch.bfloat16)
    torch.manual_seed(3)
    first, second = dropped(x, 0.2)[0], dropped(x, 0.2)[0]
    torch.manual_seed(3)
    assert torch.equal(first, dropped(x, 0.2)[0]) and not torch.equal(first, second)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_dropout_scales_kept_values_and_routes_gradients_through_its_mask(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = (torch.rand(32, 48) + 0.5).to(dtype).requires_grad_(True)
    dropout = FastDropout(0.25).train()
    out = dropout(x)
    kept = out != 0
    assert out.dtype == dtype
    assert torch.allclose(out[kept].float(), (x[kept] / 0.75).float(), rtol=1e-2)
    assert 0.1 < 1 - kept.float().mean().item() < 0.4
    out.sum().backward()
    assert torch.allclose(x.grad.float(), kept.float() / 0.75, rtol=1e-2)


def test_fast_dropout_is_the_identity_when_evaluating() -> None:
    x = torch.randn(5, 7)
    assert FastDropout(0.5).eval()(x) is x


def test_fast_dropout_replaces_every_lora_dropout_inside_its_block_only(tiny_model_dir) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_dropout=0.1, target_modules="all-linear"))
    adapted = [m for m in model.modules() if hasattr(m, "lora_dropout")]
    originals = [m.lora_dropout["default"] for m in adapted]
    keys = set(model.state_dict())
    model.train()
    inputs = torch.randint(0, 1000, (2, 9))
    with fast_dropout(model) as swapped:
        assert swapped == len(adapted) > 0
        assert all(isinstance(m.lora_dropout["default"], FastDropout) for m in adapted)
        assert set(model.state_dict()) == keys  # nothing new to save or load
        model(input_ids=inputs, labels=inputs).loss.backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if p.requires_grad)
    assert all(m.lora_dropout["default"] is d for m, d in zip(adapted, originals, strict=True))  # PEFT's own
