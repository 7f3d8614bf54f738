"""hone.train.cpu's switch: the kernels that apply are applied and named, the model and the process are
exactly as they were after the block, kernels on and off compute the same loss on two model families
(llama; Qwen2 with sliding-window layers), and `hone train` trains with them and reports them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from toy_lora import lora_model
from transformers import TrainerCallback

from hone.config import CPU_KERNELS, HoneConfig, TrainConfig
from hone.train import hardware
from hone.train.cpu import KERNELS, cpu_kernels, selected
from hone.train.cpu.attention import NAME
from hone.train.cpu.compiled import inductor_works
from hone.train.cpu.dropout import FastDropout

FAMILIES = ["tiny_model_dir", "tiny_qwen2_dir"]


def every_kernel() -> list[str]:
    """What `auto` applies to a LoRA model with dropout of a family hone covers."""
    return [name for name in CPU_KERNELS if name != "compiled_ops" or inductor_works()]


def registries() -> dict[str, dict[str, Any]]:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    return {
        "attention": dict(AttentionInterface._global_mapping),
        "mask": dict(AttentionMaskInterface._global_mapping),
    }


def snapshot(model: Any) -> dict[str, Any]:
    """Everything the kernels may swap, by identity: every module object by name, its class's forward and
    any forward of its own, the family's module-level rotary function, the attention implementation and
    transformers' attention registries."""
    inner = model.get_base_model()
    modeling = sys.modules[type(inner).__module__]
    return {
        "modules": dict(model.named_modules()),
        "class forwards": {name: type(m).forward for name, m in model.named_modules()},
        "own forwards": {name: vars(m).get("forward") for name, m in model.named_modules()},
        "rotary": modeling.apply_rotary_pos_emb,
        "attention": inner.config._attn_implementation,
        "registries": registries(),
    }


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["modules"].keys() == after["modules"].keys()
    for name, module in before["modules"].items():
        assert after["modules"][name] is module, name
        assert after["class forwards"][name] is before["class forwards"][name], name
        assert after["own forwards"][name] is before["own forwards"][name], name
    assert after["rotary"] is before["rotary"]
    assert after["attention"] == before["attention"]
    for kind, entries in before["registries"].items():
        assert after["registries"][kind].keys() == entries.keys(), kind
        assert all(after["registries"][kind][key] is value for key, value in entries.items()), kind


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of 12 tokens, the second padded after 8: longer than Qwen2's window of 4."""
    ids = torch.randint(3, 1000, (2, 12), generator=torch.Generator().manual_seed(7))
    mask = torch.tensor([[1] * 12, [1] * 8 + [0] * 4])
    return ids, mask


def test_the_switch_has_the_config_s_kernels_and_refuses_unknown_names() -> None:
    assert tuple(KERNELS) == CPU_KERNELS
    assert selected("auto") == list(CPU_KERNELS) and selected("off") == []
    assert selected(["compiled_ops", "fused_lora"]) == ["fused_lora", "compiled_ops"]  # applied in order
    with pytest.raises(ValueError, match=r"unknown CPU kernel.*'flash'.*fast_dropout"):
        selected(["rotary", "flash"])
    with pytest.raises(ValueError, match=r"unknown CPU kernel.*'flash'"):
        TrainConfig(cpu_kernels=["rotary", "flash"])
    assert TrainConfig(cpu_kernels="rotary").resolved_cpu_kernels() == ["rotary"]
    assert TrainConfig(cpu_kernels="off").resolved_cpu_kernels() == []
    with pytest.raises(ValueError, match=r"cpu_kernels lists attention .* attention is eager"):
        TrainConfig(cpu_kernels=["attention"], attention="eager")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_swap_is_undone_on_exit_and_the_logits_are_the_stock_ones(
    family: str, request: pytest.FixtureRequest
) -> None:
    model = lora_model(request.getfixturevalue(family), lora_dropout=0.1)
    ids, mask = batch()
    before = snapshot(model)
    with torch.no_grad():
        stock = model.eval()(input_ids=ids, attention_mask=mask).logits
    with cpu_kernels(model.train()) as applied:
        assert applied == every_kernel()
        inside = snapshot(model)
        assert inside["rotary"] is not before["rotary"] and inside["attention"] == NAME
        assert any(isinstance(m, FastDropout) for m in model.modules())
        model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()  # a training step's passes
    assert_same(before, snapshot(model))
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    with torch.no_grad():
        after = model.eval()(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(after, stock)


def test_an_error_inside_the_block_still_undoes_every_swap(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir, lora_dropout=0.1)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="mid-training"), cpu_kernels(model):
        raise RuntimeError("mid-training")
    assert_same(before, snapshot(model))


def test_two_models_of_one_family_share_the_rotary_swap_whatever_order_they_end_in(
    tiny_model_dir: Path,
) -> None:
    first, second = lora_model(tiny_model_dir), lora_model(tiny_model_dir)
    before, before_second = snapshot(first), snapshot(second)
    outer = cpu_kernels(first)
    assert "rotary" in outer.__enter__()
    with cpu_kernels(second) as applied:
        assert "rotary" in applied
        outer.__exit__(None, None, None)  # the first ends while the second still trains
        assert snapshot(second)["rotary"] is not before["rotary"]  # still swapped for the second
        assert NAME in registries()["attention"]
        assert_same(
            before, snapshot(first) | {"rotary": before["rotary"], "registries": before["registries"]}
        )
    assert_same(before, snapshot(first))
    assert_same(before_second, snapshot(second))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("autocast", [False, True])
def test_kernels_on_and_off_give_the_same_loss_logits_and_gradients(
    family: str, autocast: bool, request: pytest.FixtureRequest
) -> None:
    model = lora_model(request.getfixturevalue(family))  # no dropout: both see the same adapter inputs
    ids, mask = batch()
    results = []
    for kernels in ("off", "auto"):
        with cpu_kernels(model, kernels) as applied:
            assert applied == ([] if kernels == "off" else [k for k in every_kernel() if k != "fast_dropout"])
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                output = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
            output.loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
            results.append((output.loss.detach(), output.logits.detach()[mask.bool()], grads))
    (loss_off, logits_off, grads_off), (loss_on, logits_on, grads_on) = results
    tolerance = {"atol": 3e-2, "rtol": 3e-2} if autocast else {"atol": 1e-5, "rtol": 1e-4}
    torch.testing.assert_close(loss_on, loss_off, **tolerance)
    torch.testing.assert_close(logits_on.float(), logits_off.float(), **tolerance)
    assert grads_on.keys() == grads_off.keys()
    if not autocast:  # bf16 gradients of the tiny model are compared in test_cpu_lora
        for name, grad in grads_on.items():
            torch.testing.assert_close(grad, grads_off[name], atol=1e-5, rtol=1e-3, msg=name)


def test_a_padding_free_qwen2_batch_with_kernels_gives_the_padded_stock_loss(tiny_qwen2_dir: Path) -> None:
    """The sliding-window layers keep their window when hone's attention lays out each example again."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from hone.train.trainer import labelled_loss

    model = lora_model(tiny_qwen2_dir)
    generator = torch.Generator().manual_seed(3)
    rows = []
    for length in (9, 16, 4, 12):  # longer and shorter than the window of 4
        ids = torch.randint(3, 1000, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (length // 2) + ids[length // 2 :]})
    losses = []
    for free, kernels in ((False, "off"), (True, "auto")):
        data = DataCollatorForLanguageModeling(0, padding_free=free)(rows)
        labels = data.pop("labels")
        with cpu_kernels(model, kernels), torch.no_grad():
            total, count, _ = labelled_loss(model, data, labels)
        losses.append(total / count)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)


def test_a_family_it_does_not_know_is_left_alone_and_the_log_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    with caplog.at_level(logging.INFO, logger="hone.train.cpu"), cpu_kernels(model) as applied:
        assert applied == []
    logged = caplog.text
    for kernel in ("fast_dropout", "fused_lora", "attention", "rotary"):
        assert f"{kernel}: " in logged, kernel
    assert "model type 'gpt2'" in logged
    if inductor_works():
        assert "compiled_ops: model type 'gpt2'" in logged


def test_a_layer_type_it_does_not_know_keeps_the_model_s_attention(
    tiny_qwen2_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = lora_model(tiny_qwen2_dir, lora_dropout=0.1)
    model.get_base_model().config.layer_types = ["full_attention", "sliding_attention", "linear_attention"]
    with caplog.at_level(logging.INFO, logger="hone.train.cpu"), cpu_kernels(model) as applied:
        assert applied == [name for name in every_kernel() if name != "attention"]
        assert model.get_base_model().config._attn_implementation == "sdpa"
    assert "attention: layer types linear_attention are not ones it computes" in caplog.text


def test_a_model_off_the_cpu_gets_none(tiny_model_dir: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir))
    with cpu_kernels(model) as applied:
        assert applied == []


def test_off_and_the_attention_choice_follow_the_config() -> None:
    off = TrainConfig(cpu_kernels="off")
    choice = hardware.attention_choice(off, "cpu")
    assert choice.value == "sdpa" and "cpu_kernels off" in choice.reason
    without = hardware.attention_choice(TrainConfig(cpu_kernels=["fused_lora"]), "cpu")
    assert without.value == "sdpa" and "without attention" in without.reason
    assert hardware.cpu_kernels_choice(off, "cpu", "sdpa").value == []
    assert hardware.cpu_kernels_choice(TrainConfig(), "cuda", "sdpa").value == []
    assert hardware.cpu_kernels_choice(TrainConfig(), "cpu", hardware.CPU_ATTENTION).value == list(
        CPU_KERNELS
    )
    eager = hardware.cpu_kernels_choice(TrainConfig(attention="eager"), "cpu", "eager")
    assert "attention" not in eager.value and "attention: eager" in eager.reason


class ModulesSeen(TrainerCallback):
    """Whether any module had hone's forward or dropout while a step ran."""

    def __init__(self) -> None:
        self.swapped: list[bool] = []

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        own = any(
            "forward" in vars(m) and type(m).__name__.endswith(("Linear", "RMSNorm", "MLP"))
            for m in model.modules()
        )
        self.swapped.append(own or any(isinstance(m, FastDropout) for m in model.modules()))


def sft_config(tmp_path: Path, model: Path, task: dict[str, Path], **train: Any) -> HoneConfig:
    return HoneConfig.model_validate(
        {
            "model": {"reference": str(model), "max_length": 256},
            "data": {"train": str(task["train"]), "validation": str(task["validation"])},
            "train": {
                "method": "sft",
                "adapter": {"kind": "lora", "r": 4, "alpha": 8, "dropout": 0.1},
                "learning_rate": 1e-2,
                "max_steps": 3,
                "batch_size": 2,
                "eval_every": 3,
                "logging_steps": 1,
                **train,
            },
            "run": {"name": "cpu-kernels", "dir": str(tmp_path / "runs")},
            "track": {"enabled": False},
        }
    )


def test_training_qwen2_with_the_kernels_changes_every_trainable_parameter(
    tmp_path: Path, tiny_qwen2_dir: Path, small_task: dict[str, Path], spy_on: Any
) -> None:
    from hone.train import sft
    from hone.train.pipeline import run_training

    spy = spy_on(sft)
    run = run_training(sft_config(tmp_path, tiny_qwen2_dir, small_task), Console(quiet=True))
    assert run.manifest.status == "completed"
    assert run.manifest.training.cpu_kernels == every_kernel()
    assert run.manifest.training.attention == NAME and run.manifest.training.layout == "padding-free"
    assert spy.unchanged() == []


def test_off_trains_with_transformers_and_peft_s_own_layers(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hone.train import sft
    from hone.train.pipeline import run_training

    seen = ModulesSeen()
    shared = sft.callbacks
    monkeypatch.setattr(sft, "callbacks", lambda *args: [*shared(*args), seen])
    console = Console(record=True, width=200)
    run = run_training(sft_config(tmp_path, tiny_model_dir, small_task, cpu_kernels="off"), console)
    assert run.manifest.training.cpu_kernels == []
    assert run.manifest.training.attention == "sdpa" and run.manifest.training.layout == "padded"
    assert seen.swapped and not any(seen.swapped)
    assert "cpu kernels: none  (set in the config" in console.export_text()
