from __future__ import annotations

import torch
from transformers import LlamaConfig

from hone.models.parameters import count_parameters, count_parameters_on_meta


def test_count_by_hand_with_a_tied_weight_and_a_frozen_layer() -> None:
    embedding = torch.nn.Embedding(5, 3)  # 15
    hidden = torch.nn.Linear(3, 2)  # 3*2 weights + 2 biases = 8
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = embedding.weight  # tied: the same 15 values, counted once
    model = torch.nn.ModuleDict({"embedding": embedding, "hidden": hidden, "head": head})
    assert count_parameters(model) == 15 + 8
    embedding.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 8


def test_count_on_meta_by_hand() -> None:
    # hidden 4, 1 layer, 2 heads of 2 (1 kv head), MLP 8, vocab 10, tied head:
    # embeddings 10*4 = 40; q 16, k 8, v 8, o 16, gate 32, up 32, down 32 = 144; 2 norms of 4, a final one
    config = LlamaConfig(
        vocab_size=10,
        hidden_size=4,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    assert count_parameters_on_meta(config) == 40 + 144 + 2 * 4 + 4
