"""hone.train.cpu.lora: each adapter added in place gives PEFT's loss and gradients, with and without
hone's dropout, and leaves every other kind of adapter to PEFT."""

from __future__ import annotations

import pytest
import torch
from toy_lora import lora_model, loss_and_grads

from hone.train.cpu.dropout import fast_dropout
from hone.train.cpu.lora import fused_lora, lora_linears


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
    ids = torch.randint(3, 1000, (2, 10), generator=torch.Generator().manual_seed(4))
    with fast_dropout(model) as swapped:
        assert swapped == 14
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
    ids = torch.randint(3, 1000, (2, 10), generator=torch.Generator().manual_seed(6))
    with fast_dropout(model):
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
