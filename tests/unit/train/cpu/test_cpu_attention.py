"""hone.train.cpu.attention: the same attention as transformers' eager one, in value and gradient, on
grouped heads with padding and with a KV cache; padding-free rows attend within each example; switched on
only inside its block."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from transformers.masking_utils import eager_mask
from transformers.models.llama.modeling_llama import eager_attention_forward

from hone.train.cpu.attention import NAME, Segments, cpu_attention, grouped_attention


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


def test_a_row_whose_keys_are_all_masked_stays_finite_in_bf16() -> None:
    """A sliding window over padding masks every key of a padded query; fp32's mask in bf16 is -inf."""
    module = Heads(2).eval()
    q, k, v = (torch.randn(1, h, 6, 8).bfloat16() for h in (4, 2, 2))
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 5, :] = torch.finfo(torch.float32).min  # the last query sees no key
    output, _ = grouped_attention(module, q, k, v, mask, 0.3)
    assert output.dtype == torch.bfloat16 and torch.isfinite(output).all()


def separately(query, key, value, starts: list[int], scaling: float, window: int | None = None):
    """Eager attention over each example of a padding-free row on its own (a causal mask, the window)."""
    outputs = []
    for start, end in itertools.pairwise(starts):
        n = end - start
        allowed = torch.ones(n, n).tril().bool()
        if window is not None:
            allowed &= torch.ones(n, n).triu(-(window - 1)).bool()
        mask = torch.zeros(1, 1, n, n, dtype=query.dtype).masked_fill(~allowed, torch.finfo(query.dtype).min)
        part = [t[:, :, start:end] for t in (query, key, value)]
        outputs.append(eager_attention_forward(Heads(query.size(1) // key.size(1)), *part, mask, scaling)[0])
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("window", [None, 3])
def test_a_padding_free_row_attends_within_each_example_in_value_and_gradients(window: int | None) -> None:
    torch.manual_seed(2)
    starts = [0, 5, 14, 17, 24]  # examples of 5, 9, 3 and 7 tokens in one row
    heads, kv_heads, dim = 6, 2, 8
    module = Heads(heads // kv_heads).train()
    module.sliding_window = window
    tensors = [torch.randn(1, h, starts[-1], dim, dtype=torch.float64) for h in (heads, kv_heads, kv_heads)]
    # transformers' block-diagonal mask comes too; the boundaries are what the attention goes by
    bounds = torch.tensor(starts, dtype=torch.int32)
    results = []
    for attention in (separately, grouped_attention):
        inputs = [t.clone().requires_grad_(True) for t in tensors]
        if attention is separately:
            output = separately(*inputs, starts, 0.3, window)
        else:
            output, _ = grouped_attention(module, *inputs, None, 0.3, cu_seq_lens_q=bounds)
        output.backward(torch.linspace(-1, 1, output.numel(), dtype=output.dtype).view_as(output))
        results.append((output, [t.grad for t in inputs]))
    (expected, expected_grads), (output, grads) = results
    assert output.shape == (1, starts[-1], heads, dim)
    # eager's softmax runs in fp32 whatever the inputs
    torch.testing.assert_close(output, expected, atol=1e-6, rtol=1e-5)
    for ours, theirs in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_layers_with_and_without_a_sliding_window_get_their_own_masks() -> None:
    bounds = torch.tensor([0, 6, 10], dtype=torch.int32)
    query = torch.zeros(1, 2, 10, 4)
    windowed = Segments.of(bounds, query, 2)
    full = Segments.of(bounds, query, None)
    assert windowed is not None and full is not None
    assert (windowed.window, full.window) == (2, None)
    assert int((full.mask == 0).sum()) > int((windowed.mask == 0).sum())
    assert Segments.of(bounds, query, None) is full  # the next layer of the same kind reuses it
    assert Segments.of(bounds, query, 2) is windowed  # also across interleaved kinds
    assert Segments.of(torch.tensor([0, 10], dtype=torch.int32), query, None) is None  # one example


def test_a_padding_free_batch_gives_the_padded_batch_s_loss_and_gradients(tiny_model_dir: Path) -> None:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from hone.train.cpu import attention as module
    from hone.train.trainer import labelled_loss

    model = language_model(tiny_model_dir).train()
    generator = torch.Generator().manual_seed(3)
    rows = []
    for length in (9, 16, 4, 12):
        ids = torch.randint(3, 1000, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (length // 2) + ids[length // 2 :]})
    results = []
    module.Segments._cache = None
    for free in (False, True):
        batch = DataCollatorForLanguageModeling(0, padding_free=free)(rows)
        labels = batch.pop("labels")
        model.zero_grad()
        with cpu_attention(model):
            total, count, _ = labelled_loss(model, batch, labels)
            cached = module.Segments._cache
        total.backward()
        results.append((total.detach(), int(count), [p.grad.clone() for p in model.parameters()]))
    (padded, padded_count, padded_grads), (free, free_count, free_grads) = results
    assert cached is not None and module.Segments._cache is None  # the batch's layouts go with the block
    (layout,) = cached[1].values()  # the padding-free row went through the layout
    assert (layout.count, layout.longest, layout.total) == (4, 16, 41)
    assert free_count == padded_count == sum(n - n // 2 for n in (9, 16, 4, 12))
    torch.testing.assert_close(free, padded, atol=1e-4, rtol=1e-5)
    for ours, theirs in zip(free_grads, padded_grads, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-3)


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
