"""check_weights: a model or adapter folder that would fail to load is refused from its headers alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hone.errors import HoneError
from hone.models.trained import check_safetensors, check_weights


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A real PEFT LoRA adapter of the tiny model, as training saves it."""
    from peft import LoraConfig, get_peft_model

    from hone.models.resolve import load_model

    folder = tmp_path_factory.mktemp("adapter")
    model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear"))
    model.save_pretrained(folder)
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_sound_adapters_and_models_pass(adapter: Path, tiny_model_dir: Path) -> None:
    check_weights(adapter)
    check_weights(tiny_model_dir)


@pytest.mark.parametrize("keep", [0, 5, 100, -1])
def test_a_truncated_safetensors_file_is_named(adapter: Path, tmp_path: Path, keep: int) -> None:
    folder = copy_of(adapter, tmp_path)
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep])

    with pytest.raises(HoneError, match="truncated or corrupt") as refused:
        check_weights(folder)
    assert str(refused.value).startswith(f"{weights}: ")


def test_bytes_beyond_the_header_are_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(3, 4)}, str(path))
    check_safetensors(path)
    path.write_bytes(path.read_bytes() + b"\0" * 4)
    with pytest.raises(HoneError, match=r"header describes \d+ bytes, the file has \d+"):
        check_safetensors(path)


def test_a_tensor_whose_offsets_do_not_fit_its_shape_is_refused(tmp_path: Path) -> None:
    header = json.dumps({"weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 40]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 40)
    with pytest.raises(HoneError, match=r"tensor 'weight' \(F32 \[3, 4\]\) has wrong data_offsets"):
        check_safetensors(path)


def test_a_truncated_adapter_config_is_named(adapter: Path, tmp_path: Path) -> None:
    folder = copy_of(adapter, tmp_path)
    config = folder / "adapter_config.json"
    config.write_text(config.read_text()[:20])
    with pytest.raises(HoneError, match="not valid JSON") as refused:
        check_weights(folder)
    assert str(refused.value).startswith(f"{config}: ")


def test_a_folder_without_weights_or_with_a_missing_shard(adapter: Path, tmp_path: Path) -> None:
    folder = copy_of(adapter, tmp_path)
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(HoneError, match=r"no weights file \(expected adapter_model.safetensors\)"):
        check_weights(folder)

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file({"a": torch.zeros(2)}, str(sharded / "model-00001-of-00002.safetensors"))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(HoneError, match=r"model-00002-of-00002.safetensors: missing \(listed in"):
        check_weights(sharded)
    with pytest.raises(HoneError, match="the weights folder is missing"):
        check_weights(tmp_path / "nowhere")
