from __future__ import annotations

import torch

from hone.data.tokenize import IGNORE_INDEX
from hone.train.loss import label_span, shifted_targets, sum_cross_entropy

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
    torch.manual_seed(0)
    input_ids = torch.randint(0, 1000, (3, 12))
    labels = input_ids.clone()
    labels[0, :7] = X
    labels[1, :4] = X
    labels[2, :10] = X
    full = model(input_ids=input_ids, labels=labels).loss
    first = label_span(labels)
    positions = torch.arange(first, labels.size(1) - 1)
    logits = model(input_ids=input_ids, logits_to_keep=positions).logits
    total, count = sum_cross_entropy(logits, shifted_targets(labels, first))
    assert torch.allclose(total / count, full, atol=1e-5)
