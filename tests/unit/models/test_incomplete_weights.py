"""A model folder that lacks weights the model needs is refused when it loads, naming the folder and the
weights: transformers would fill them with random values and every later stage would run on garbage."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hone.cli import main
from hone.errors import HoneError
from hone.models.resolve import load_model
from hone.train import hardware
from hone.train.setup import Setup, load_base

DROPPED = "model.layers.1.mlp.down_proj.weight"


def damaged_copy(source: Path, target: Path, change: dict[str, torch.Tensor | None]) -> Path:
    """A copy of a model folder with some tensors of its safetensors replaced (or, for None, removed)."""
    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    for name, tensor in change.items():
        if tensor is None:
            del tensors[name]
        else:
            tensors[name] = tensor
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_hone_train_refuses_a_model_folder_missing_a_weight(
    tmp_path: Path,
    tiny_model_dir: Path,
    small_task: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = damaged_copy(tiny_model_dir, tmp_path / "broken-model", {DROPPED: None})
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model: {{reference: {broken}}}\ndata: {{train: {small_task['train']}}}\n"
        f"train: {{max_steps: 1}}\nrun: {{name: broken, dir: {tmp_path / 'runs'}}}\n"
        "track: {enabled: false}\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys, "argv", ["hone", "train", "-c", str(config)])
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in message
    assert f"{broken}: 1 weight(s) the model needs are missing from its files: {DROPPED}" in message
    manifest = json.loads((tmp_path / "runs" / "broken" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "failed" and DROPPED in manifest["error"]
    assert not (tmp_path / "runs" / "broken" / "adapter").exists()


def test_a_weight_of_the_wrong_shape_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    broken = damaged_copy(tiny_model_dir, tmp_path / "reshaped", {DROPPED: torch.zeros(5, 5)})
    with pytest.raises(HoneError) as refused:
        load_model(broken)
    assert str(refused.value).startswith(f"{broken}: 1 weight(s) the model needs are of the wrong shape")
    assert f"{DROPPED} (file [5, 5], model [64, 128])" in str(refused.value)


def test_tied_heads_and_a_new_reward_head_are_not_missing(tiny_model_dir: Path) -> None:
    """The fixture ties its lm_head to the embedding (as SmolLM2 does), so its files have no lm_head;
    a reward model's score head is new by design."""
    assert "lm_head.weight" not in load_file(tiny_model_dir / "model.safetensors")
    model = load_model(tiny_model_dir)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    setup = Setup(
        {
            "device": hardware.Choice("cpu", ""),
            "precision": hardware.Choice("fp32", ""),
            "gradient checkpointing": hardware.Choice(False, ""),
            "attention": hardware.Choice("sdpa", ""),
        }
    )
    reward = load_base(tiny_model_dir, setup, quantized=False, head="score")
    assert reward.score.weight.shape == (1, 64)


def test_the_4bit_base_of_a_qlora_run_is_checked_too(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A load that does not go through load_model: the QLoRA base, quantized and dequantized for evaluation
    and export, as training saw it."""
    from dataclasses import dataclass

    from hone.models.trained import dequantized_base

    broken = damaged_copy(tiny_model_dir, tmp_path / "broken-base", {DROPPED: None})

    @dataclass
    class Weights:
        base: Path
        weights: Path
        kind: str = "qlora"
        training_precision: str = "fp32"

    with pytest.raises(
        HoneError, match=f"1 weight\\(s\\) the model needs are missing from its files: {DROPPED}"
    ):
        dequantized_base(Weights(broken, tmp_path))
    assert dequantized_base(Weights(tiny_model_dir, tmp_path)).lm_head is not None
