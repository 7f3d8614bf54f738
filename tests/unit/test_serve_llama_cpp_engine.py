"""The llama.cpp engine's parts that need no llama-cpp-python: the error without the extra, and the keys of
its GGUF cache."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hone.config import ServeFile
from hone.errors import HoneError
from hone.serve import create_engine
from hone.serve.llama_cpp import content_key, folder_stamp, run_folder


def test_without_the_extra_the_error_names_the_install_command(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    settings = ServeFile.model_validate(
        {"model": {"reference": str(tiny_model_dir)}, "serve": {"engine": "llama.cpp"}}
    )
    with pytest.raises(HoneError, match=r"pip install 'hone\[llama-cpp\]'"):
        create_engine(settings)


def test_an_adapters_key_follows_its_content_and_its_base(tmp_path: Path) -> None:
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / "adapter_config.json").write_text("{}")
    key = content_key(adapter, "base-a")
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in adapter.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    assert content_key(copy, "base-a") == key, "the same files elsewhere: the same GGUF"
    assert content_key(adapter, "base-b") != key, "over another base: another model"
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained")
    assert content_key(adapter, "base-a") != key


def test_a_base_is_stamped_by_its_files_and_an_adapter_finds_its_run(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights")
    stamp = folder_stamp(base)
    assert folder_stamp(base) == stamp
    (base / "model.safetensors").write_bytes(b"other weights")
    assert folder_stamp(base) != stamp
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "manifest.json").write_text("{}")
    assert run_folder(tmp_path / "run" / "adapter") == (tmp_path / "run").resolve()
    with pytest.raises(HoneError, match="no run folder"):
        run_folder(base)
