from __future__ import annotations

from unittest.mock import patch

import pytest
import torch
import torch.nn.functional as F

from hone.data.tokenize import IGNORE_INDEX
from hone.train.loss import chunk_rows, label_span, linear_cross_entropy, shifted_targets, sum_cross_entropy
from hone.train.trainer import labelled_loss, plain_head

X = IGNORE_INDEX


def test_label_span_finds_first_position_predicting_a_label() -> None:
    labels = torch.tensor([[X, X, X, 5, 6], [X, X, 7, 8, X]])
    assert label_span(labels) == 1  # position 1 predicts labels[1, 2] = 7
    assert shifted_targets(labels, 1).tolist() == [[X, 5, 6], [7, 8, X]]


def test_label_span_without_labels_is_the_last_scored_position() -> None:
    assert label_span(torch.full((2, 4), X)) == 2


def test_sum_cross_entropy_hand_computed() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    total, count = sum_cross_entropy(logits, torch.tensor([[0, X]]))
    assert count.item() == 1
    assert torch.isclose(total, torch.tensor(-torch.log(torch.tensor(0.5)).item()))


def test_span_loss_equals_the_models_full_loss(tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    inputs, labels = lora_batch()
    input_ids = inputs["input_ids"]
    full = model(input_ids=input_ids, labels=labels).loss
    first = label_span(labels)
    positions = torch.arange(first, labels.size(1) - 1)
    logits = model(input_ids=input_ids, logits_to_keep=positions).logits
    total, count = sum_cross_entropy(logits, shifted_targets(labels, first))
    assert torch.allclose(total / count, full, atol=1e-5)


def reference_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return sum_cross_entropy(hidden.to(weight.dtype) @ weight.T, targets)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 100])
def test_linear_cross_entropy_matches_full_logits(dtype: torch.dtype, rows: int) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 7, 16, requires_grad=True)
    weight = (torch.randn(50, 16) * 0.3).to(dtype).requires_grad_(True)
    targets = torch.randint(0, 50, (2, 7))
    targets[0, :3] = X
    targets[1, 5:] = X
    with patch("hone.train.loss.chunk_rows", return_value=rows):  # several chunks, one, or a partial one
        total, count = linear_cross_entropy(hidden, weight, targets)
    (total * 0.5).backward()  # a scale from outside (the Trainer's normalisation) reaches the gradients
    fused_hidden, fused_weight = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    expected = reference_loss(hidden, weight, targets)
    (expected * 0.5).backward()
    assert count.item() == 9
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(total, expected.float(), rtol=tolerance)
    assert torch.allclose(fused_hidden, hidden.grad, atol=tolerance)
    assert torch.allclose(fused_weight.float(), weight.grad.float(), atol=tolerance)
    assert fused_weight.dtype == dtype


def test_linear_cross_entropy_without_labels_is_zero_and_still_differentiable() -> None:
    hidden = torch.randn(1, 4, 8, requires_grad=True)
    total, count = linear_cross_entropy(hidden, torch.randn(10, 8), torch.full((1, 4), X))
    total.backward()
    assert count.item() == 0 and total.item() == 0.0
    assert torch.equal(hidden.grad, torch.zeros_like(hidden))


def test_linear_cross_entropy_under_no_grad_gives_the_same_loss() -> None:
    torch.manual_seed(1)
    hidden, weight = torch.randn(3, 5, 8), torch.randn(20, 8)
    targets = torch.randint(0, 20, (3, 5))
    with torch.no_grad():
        total, _ = linear_cross_entropy(hidden, weight, targets)
    assert torch.allclose(total, reference_loss(hidden, weight, targets), rtol=1e-5)
    assert chunk_rows(49152) == 341  # 64 MB of fp32 logits per chunk for SmolLM2's vocabulary


def lora_batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    input_ids = torch.randint(0, 1000, (3, 12))
    labels = input_ids.clone()
    labels[0, :7] = X
    labels[1, :4] = X
    labels[2, :10] = X
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}, labels


@pytest.mark.parametrize("softcapped", [False, True])
def test_labelled_loss_equals_the_models_own_and_restores_the_head(tiny_model_dir, softcapped: bool) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if softcapped:  # a model that rescales its logits after the head keeps computing them itself
        base.config.final_logit_softcapping = 30.0
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    head = model.get_output_embeddings()
    assert (plain_head(model) is None) == softcapped
    inputs, labels = lora_batch()
    expected = model(**inputs, labels=labels).loss
    total, count, _ = labelled_loss(model, inputs, labels)
    assert count.item() == labels[:, 1:].ne(X).sum().item()
    assert torch.allclose(total / count, expected, atol=1e-5)
    assert model.get_output_embeddings() is head


def test_labelled_loss_under_bf16_autocast_feeds_bf16_input_to_fp32_adapters(tiny_model_dir) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    adapter = next(p for name, p in model.named_parameters() if "lora_A" in name)
    assert adapter.dtype == torch.float32  # PEFT keeps adapters in fp32 on a bf16 base
    inputs, labels = lora_batch()
    with pytest.raises(RuntimeError):  # without autocast the uncast bf16 input cannot meet fp32 adapters
        labelled_loss(model, inputs, labels, mixed_precision=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(**inputs, labels=labels).loss
        total, count, _ = labelled_loss(model, inputs, labels, mixed_precision=True)
    (total / count).backward()
    assert torch.allclose((total / count).float(), expected.float(), rtol=2e-2)
    assert adapter.grad is not None and adapter.grad.dtype == torch.float32
    assert all(getattr(m, "cast_input_dtype_enabled", True) for m in model.modules())  # restored


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_loss_and_grad_eager_and_compiled_equal_autograd_cross_entropy(dtype: torch.dtype) -> None:
    from hone.train.loss import logits_loss_and_grad, loss_and_grad_function

    generator = torch.Generator().manual_seed(6)
    logits = (torch.randn(7, 300, generator=generator) * 3).to(dtype)
    targets = torch.randint(0, 300, (7,), generator=generator)
    reference = logits.float().requires_grad_(True)
    expected = F.cross_entropy(reference, targets, reduction="sum")
    expected.backward()
    tolerance = {"atol": 1e-2, "rtol": 1e-2} if dtype == torch.bfloat16 else {"atol": 1e-5, "rtol": 1e-5}
    for function in (logits_loss_and_grad, loss_and_grad_function()):
        total, grad = function(logits, targets)
        assert grad.dtype == dtype and grad.shape == logits.shape
        torch.testing.assert_close(total, expected.detach(), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(grad.float(), reference.grad, **tolerance)
