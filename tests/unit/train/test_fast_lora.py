from __future__ import annotations

import math

import pytest
import torch
from toy_lora import lora_model, loss_and_grads

import hone.train.fast_lora
from hone.train.compiled_ops import compiled, inductor_works
from hone.train.fast_lora import (
    FastDropout,
    compiled_dropped_words,
    counter,
    dropped,
    fused_lora,
    lane_masks,
    lane_ones,
    lora_linears,
    random_words,
    splitmix64,
    use_fast_dropout,
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
    monkeypatch.setattr(hone.train.fast_lora, "inductor_works", lambda: False)
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


def test_use_fast_dropout_replaces_every_lora_dropout_and_keeps_the_saved_adapter(tiny_model_dir) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_dropout=0.1, target_modules="all-linear"))
    adapted = [m for m in model.modules() if hasattr(m, "lora_dropout")]
    keys = set(model.state_dict())
    assert use_fast_dropout(model) == len(adapted) > 0
    assert all(isinstance(m.lora_dropout["default"], FastDropout) for m in adapted)
    assert set(model.state_dict()) == keys  # nothing new to save or load
    assert use_fast_dropout(model) == 0  # already replaced
    model.train()
    inputs = torch.randint(0, 1000, (2, 9))
    model(input_ids=inputs, labels=inputs).loss.backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_lora_gives_peft_s_loss_and_gradients(tiny_model_dir, autocast: bool) -> None:
    model = lora_model(tiny_model_dir)  # no dropout: both paths see the same adapter inputs
    ids = torch.randint(3, 1000, (2, 10), generator=torch.Generator().manual_seed(1))
    keys = set(model.state_dict())
    expected, expected_grads = loss_and_grads(model, ids, autocast)
    with fused_lora(model) as fused:
        assert fused == len(lora_linears(model)) == 14  # 7 linear layers in each of 2 blocks
        loss, grads = loss_and_grads(model, ids, autocast)
    tolerance = {"atol": 2e-2, "rtol": 2e-2} if autocast else {"atol": 1e-6, "rtol": 1e-5}
    torch.testing.assert_close(loss, expected, **tolerance)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], **tolerance, msg=name)
    assert not any("forward" in vars(m) for m in lora_linears(model))  # PEFT's forward is back
    assert set(model.state_dict()) == keys


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_lora_with_fast_dropout_gives_peft_s_loss_and_gradients_under_the_same_masks(
    tiny_model_dir, autocast: bool
) -> None:
    """The fused path drops without rescaling and folds 1/(1-p) into the adapter's scaling: the same
    function as PEFT's forward with FastDropout, drawing the same masks in the same order. Under autocast
    PEFT's forward runs without its fp32 copy of the adapters' input, as hone trains (the masks' lanes
    follow the width of the values they drop)."""
    from peft.helpers import disable_input_dtype_casting

    model = lora_model(tiny_model_dir, lora_dropout=0.3)
    assert use_fast_dropout(model) == 14
    ids = torch.randint(3, 1000, (2, 10), generator=torch.Generator().manual_seed(4))
    with disable_input_dtype_casting(model, active=autocast):
        torch.manual_seed(11)
        expected, expected_grads = loss_and_grads(model, ids, autocast)
        torch.manual_seed(12)
        other, _ = loss_and_grads(model, ids, autocast)
    assert not torch.allclose(other, expected)  # the masks matter
    with fused_lora(model):
        torch.manual_seed(11)
        loss, grads = loss_and_grads(model, ids, autocast)
    tolerance = {"atol": 2e-2, "rtol": 2e-2} if autocast else {"atol": 1e-6, "rtol": 1e-5}
    torch.testing.assert_close(loss, expected, **tolerance)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], **tolerance, msg=name)


def test_fused_lora_leaves_disabled_merged_and_dora_adapters_to_peft(tiny_model_dir) -> None:
    ids = torch.randint(3, 1000, (1, 8), generator=torch.Generator().manual_seed(2))
    dora = lora_model(tiny_model_dir, use_dora=True).eval()
    plain = lora_model(tiny_model_dir).eval()
    with torch.no_grad():
        expected = dora(input_ids=ids).logits
        with plain.disable_adapter():
            base = plain(input_ids=ids).logits
        with fused_lora(dora), fused_lora(plain):
            assert torch.equal(dora(input_ids=ids).logits, expected)
            with plain.disable_adapter():
                assert torch.equal(plain(input_ids=ids).logits, base)
            adapted = plain(input_ids=ids).logits
            plain.merge_adapter()
            torch.testing.assert_close(plain(input_ids=ids).logits, adapted, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(adapted, base)  # the adapters do change the output


def backward_nodes(loss: torch.Tensor) -> set[str]:
    """The names of every node in loss's autograd graph."""
    seen, stack, names = set(), [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(parent for parent, _ in node.next_functions)
    return names


def graph_of_one_pass(model, ids: torch.Tensor, autocast: bool) -> set[str]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return backward_nodes(model(input_ids=ids, labels=ids).loss)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_frozen_bf16_base_and_its_adapter_are_one_node_with_peft_s_loss_and_gradients(
    tiny_model_dir, dropout: float
) -> None:
    """hone's CPU setting: the frozen base in bf16, fp32 adapters, bf16 autocast. Base layer and adapter
    run as one autograd node whose backward adds the base layer's input gradient inside its GEMM."""
    from peft.helpers import disable_input_dtype_casting

    model = lora_model(tiny_model_dir, lora_dropout=dropout)
    for parameter in model.parameters():
        if not parameter.requires_grad:
            parameter.data = parameter.data.to(torch.bfloat16)
    use_fast_dropout(model)
    ids = torch.randint(3, 1000, (2, 10), generator=torch.Generator().manual_seed(6))
    with disable_input_dtype_casting(model):  # PEFT's forward as hone runs it: no fp32 copies
        torch.manual_seed(21)
        expected, expected_grads = loss_and_grads(model, ids, autocast=True)
    with fused_lora(model):
        assert "_FrozenLinearWithLowRankBackward" in graph_of_one_pass(model, ids, autocast=True)
        torch.manual_seed(21)
        loss, grads = loss_and_grads(model, ids, autocast=True)
    torch.testing.assert_close(loss, expected, atol=2e-2, rtol=2e-2)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=2e-2, rtol=5e-2, msg=name)


def test_base_layers_in_another_dtype_or_being_trained_keep_their_own_node(tiny_model_dir) -> None:
    model = lora_model(tiny_model_dir)
    ids = torch.randint(3, 1000, (2, 10), generator=torch.Generator().manual_seed(8))
    with fused_lora(model):
        assert "_FrozenLinearWithLowRankBackward" in graph_of_one_pass(model, ids, autocast=False)
        # fp32 weights under bf16 autocast: the base layer is autocast's, the adapter added in place
        mixed = graph_of_one_pass(model, ids, autocast=True)
        assert "_AddLowRankBackward" in mixed and "_FrozenLinearWithLowRankBackward" not in mixed
    trained = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    trained.requires_grad_(True)
    expected, expected_grads = loss_and_grads(model, ids)
    with fused_lora(model):
        loss, grads = loss_and_grads(model, ids)
    torch.testing.assert_close(loss, expected)
    name = next(n for n, p in model.named_parameters() if p is trained)
    assert grads[name].abs().sum() > 0
    for key, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[key], atol=1e-6, rtol=1e-5, msg=key)
