"""hone.train.cpu.compiled: transformers' RMSNorm and SwiGLU computed by compiled kernels give the same
values and gradients, only inside the block, and not at all where inductor cannot compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from toy_lora import lora_model, loss_and_grads

from hone.train.cpu import compiled as compiled_ops
from hone.train.cpu.compiled import compiled, compiled_layers, rms_norm, silu_product


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_compiled_norm_and_product_match_transformers_modules(dtype: torch.dtype) -> None:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    norm = LlamaRMSNorm(24, eps=1e-5).to(dtype)
    torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 5e-2, "rtol": 2e-2}
    x = torch.randn(3, 7, 24, dtype=dtype)
    for fused in (False, True):
        inputs = x.clone().requires_grad_(True)
        out = compiled(rms_norm)(inputs, norm.weight, 1e-5) if fused else norm(inputs)
        out.backward(torch.ones_like(out))
        if not fused:
            expected, expected_grad = out.detach(), inputs.grad
            norm.weight.grad = None
    torch.testing.assert_close(out.detach(), expected, **tolerance)
    torch.testing.assert_close(inputs.grad, expected_grad, **tolerance)
    gate, up = torch.randn(5, 16, dtype=dtype), torch.randn(5, 16, dtype=dtype)
    torch.testing.assert_close(
        compiled(silu_product)(gate, up), torch.nn.functional.silu(gate) * up, **tolerance
    )


def test_compiled_layers_keep_the_loss_and_gradients_and_restore_the_modules(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir)
    ids = torch.randint(3, 1000, (2, 9), generator=torch.Generator().manual_seed(3))
    expected, expected_grads = loss_and_grads(model, ids)
    with compiled_layers(model) as replaced:
        assert replaced == 2 * 2 + 1 + 2  # two norms per block, the final norm, one MLP per block
        patched = [m for m in model.modules() if "forward" in vars(m)]
        assert len(patched) == replaced
        loss, grads = loss_and_grads(model, ids)
    assert not any("forward" in vars(m) for m in model.modules())
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_without_a_working_inductor_the_modules_stay_eager(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_compiler(*args: object, **kwargs: object) -> object:
        raise RuntimeError("no C++ compiler")

    compiled_ops.inductor_works.cache_clear()
    monkeypatch.setattr(torch, "compile", no_compiler)
    try:
        with compiled_layers(lora_model(tiny_model_dir)) as replaced:
            assert replaced == 0
    finally:
        compiled_ops.inductor_works.cache_clear()


def test_other_model_types_are_left_alone() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    with compiled_layers(model) as replaced:
        assert replaced == 0


def test_the_logits_round_the_same_with_and_without_gradients(tiny_model_dir: Path) -> None:
    """DPO's reference pass runs without gradients and its policy pass with them: at the first step both
    must give the same log-probabilities, so the compiled kernels may not round differently in the two."""
    model = lora_model(tiny_model_dir).to(torch.bfloat16)
    ids = torch.randint(3, 1000, (2, 9), generator=torch.Generator().manual_seed(4))
    with compiled_layers(model), torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            inference = model(input_ids=ids).logits
        training = model(input_ids=ids).logits
    assert training.requires_grad
    assert torch.equal(training.detach(), inference)
