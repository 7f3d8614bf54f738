"""hone.train.cpu_attention: the same attention as transformers' eager one, in value and gradient, on
grouped heads with padding and with a KV cache; switched on only inside its block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.masking_utils import eager_mask
from transformers.models.llama.modeling_llama import eager_attention_forward

from hone.train.cpu_attention import NAME, cpu_attention, grouped_attention


class Heads(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups


def padded_mask(lengths: list[int], width: int) -> torch.Tensor:
    padding = torch.tensor([[1] * n + [0] * (width - n) for n in lengths], dtype=torch.bool)
    return eager_mask(batch_size=len(lengths), q_length=width, kv_length=width, attention_mask=padding)


@pytest.mark.parametrize("masked", [True, False])
def test_grouped_attention_equals_eager_attention_in_value_and_gradients(masked: bool) -> None:
    torch.manual_seed(0)
    batch, heads, kv_heads, length, dim = 3, 6, 2, 11, 8
    module = Heads(heads // kv_heads).train()
    mask = padded_mask([11, 7, 4], length) if masked else None
    tensors = [torch.randn(batch, h, length, dim) for h in (heads, kv_heads, kv_heads)]
    outputs, grads = [], []
    for attention in (eager_attention_forward, grouped_attention):
        inputs = [t.clone().requires_grad_(True) for t in tensors]
        output, _ = attention(module, *inputs, attention_mask=mask, scaling=dim**-0.5)
        output.backward(torch.linspace(-1, 1, output.numel()).view_as(output))
        outputs.append(output)
        grads.append([t.grad for t in inputs])
    assert outputs[1].shape == (batch, length, heads, dim) and outputs[1].is_contiguous()
    torch.testing.assert_close(outputs[1], outputs[0])
    for ours, eager in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(ours, eager)


def test_grouped_attention_in_bf16_stays_within_bf16_rounding_of_fp32() -> None:
    torch.manual_seed(1)
    module = Heads(3).eval()
    q, k, v = torch.randn(2, 9, 20, 16), torch.randn(2, 3, 20, 16), torch.randn(2, 3, 20, 16)
    mask = padded_mask([20, 13], 20)
    exact, _ = grouped_attention(module, q, k, v, mask, 0.25)
    half, _ = grouped_attention(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), mask.bfloat16(), 0.25)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), exact, atol=3e-2, rtol=3e-2)


def language_model(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()


def test_the_model_gives_the_same_logits_and_generation_inside_the_block(tiny_model_dir: Path) -> None:
    model = language_model(tiny_model_dir)
    ids = torch.randint(3, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1] * 12, [1] * 8 + [0] * 4])
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        prompt = {"input_ids": ids[:1, :6], "attention_mask": mask[:1, :6]}
        reply = model.generate(**prompt, max_new_tokens=6, do_sample=False)
        with cpu_attention(model) as on:
            assert on and model.config._attn_implementation == NAME
            inside = model(input_ids=ids, attention_mask=mask).logits
            cached = model.generate(**prompt, max_new_tokens=6, do_sample=False)  # one query, a KV cache
    assert model.config._attn_implementation == "sdpa"
    real = mask.bool()
    torch.testing.assert_close(inside[real], before[real], atol=1e-5, rtol=1e-4)
    assert torch.equal(cached, reply)


def test_a_peft_model_is_switched_through_its_base_model(tiny_model_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(language_model(tiny_model_dir), LoraConfig(r=2, target_modules="all-linear"))
    with cpu_attention(model) as on:
        assert on and model.get_base_model().config._attn_implementation == NAME
    assert model.get_base_model().config._attn_implementation == "sdpa"


def test_other_model_types_keep_their_attention() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    before = model.config._attn_implementation
    with cpu_attention(model) as on:
        assert not on and model.config._attn_implementation == before
