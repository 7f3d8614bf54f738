from __future__ import annotations

import sys

import pytest
import torch
from toy_lora import lora_model, loss_and_grads
from transformers.models.llama import modeling_llama

from hone.train.cpu.rotary import fused_rotary, halfwise


def rotary_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(2, 7, 6, 8, generator=generator).to(dtype).transpose(1, 2)  # the model's transposed view
    k = torch.randn(2, 7, 2, 8, generator=generator).to(dtype).transpose(1, 2)
    # halves that differ: nothing may rely on cos and sin repeating their first half
    cos = torch.randn(2, 7, 8, generator=generator).to(dtype)
    sin = torch.randn(2, 7, 8, generator=generator).to(dtype)
    return q.requires_grad_(True), k.requires_grad_(True), cos, sin


def embeddings_and_gradients(apply, dtype: torch.dtype) -> list[torch.Tensor]:
    q, k, cos, sin = rotary_inputs(dtype)
    q_out, k_out = apply(q, k, cos, sin)
    generator = torch.Generator().manual_seed(4)
    grads = [torch.randn(t.shape, generator=generator).to(dtype) for t in (q_out, k_out)]
    torch.autograd.backward([q_out, k_out], grads)
    return [q_out.detach(), k_out.detach(), q.grad, k.grad]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_halfwise_rotation_gives_transformers_embeddings_and_gradients(dtype: torch.dtype) -> None:
    original = modeling_llama.apply_rotary_pos_emb
    expected = embeddings_and_gradients(original, dtype)
    got = embeddings_and_gradients(halfwise(original), dtype)
    # bf16: two roundings per element instead of three, so within one bf16 step of the values (|x| < 16)
    tolerance = {"atol": 1e-6, "rtol": 1e-6} if dtype == torch.float32 else {"atol": 7e-2, "rtol": 1e-2}
    for name, value, reference in zip(("q", "k", "q grad", "k grad"), got, expected, strict=True):
        assert value.dtype == dtype
        torch.testing.assert_close(value, reference, **tolerance, msg=name)


def test_cos_and_sin_in_another_dtype_go_to_transformers_own() -> None:
    calls = []

    def original(*args, **kwargs):
        calls.append(args)
        return modeling_llama.apply_rotary_pos_emb(*args, **kwargs)

    q, k, cos, sin = rotary_inputs(torch.bfloat16)
    halfwise(original)(q, k, cos.float(), sin.float())
    assert len(calls) == 1
    halfwise(original)(q, k, cos, sin)
    assert len(calls) == 1


def test_fused_rotary_swaps_the_family_s_function_for_the_block_only(tiny_model_dir) -> None:
    model = lora_model(tiny_model_dir)
    ids = torch.randint(3, 1000, (2, 10), generator=torch.Generator().manual_seed(5))
    module = sys.modules[type(model.get_base_model()).__module__]
    original = module.apply_rotary_pos_emb
    expected, expected_grads = loss_and_grads(model, ids)
    with fused_rotary(model) as swapped:
        assert swapped and module.apply_rotary_pos_emb is not original
        loss, grads = loss_and_grads(model, ids)
    assert module.apply_rotary_pos_emb is original
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_other_families_keep_their_rotary_embedding(tiny_model_dir) -> None:
    model = lora_model(tiny_model_dir)
    model.get_base_model().config.model_type = "gemma"  # not one whose function is llama's
    with fused_rotary(model) as swapped:
        assert not swapped
