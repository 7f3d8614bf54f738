from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hone.errors import HoneError
from hone.hardware import cpu_bf16_native
from hone.models import resolve
from hone.models.resolve import (
    CONVERSION_RECORD,
    cached_models,
    ensure_converted,
    inference_device,
    inference_dtype,
    resolve_model,
)


def test_local_hf_folder_resolves_to_itself(tiny_model_dir: Path) -> None:
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir


def test_folder_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HoneError, match=r"no config\.json"):
        resolve_model(str(tmp_path))


def test_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(HoneError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "model.gguf"))


def test_unknown_reference_lists_the_aliases() -> None:
    with pytest.raises(HoneError, match=r"not a built-in alias \(smollm2-135m-instruct\)"):
        resolve_model("no such model")


def test_hub_id_offline_is_a_clear_error() -> None:
    with pytest.raises(HoneError, match=r"could not download .* offline"):
        resolve_model("someone/not-cached-model")


def test_alias_of_a_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    alias = resolve.GGUFAlias("hone_no_such_package", "x.gguf", "pip install it", "test")
    monkeypatch.setitem(resolve.ALIASES, "missing-alias", alias)
    with pytest.raises(HoneError, match="pip install it"):
        resolve_model("missing-alias")


def test_interrupted_conversion_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_crash(gguf_path: Path, out_dir: Path) -> None:
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(resolve, "convert_gguf", half_then_crash)
    target = tmp_path / "cache" / "m"
    with pytest.raises(KeyboardInterrupt):
        ensure_converted(tmp_path / "x.gguf", target)
    assert not target.exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_finished_conversion_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_convert(gguf_path: Path, out_dir: Path) -> None:
        calls.append(gguf_path)
        out_dir.mkdir(parents=True)
        (out_dir / CONVERSION_RECORD).write_text("{}")

    monkeypatch.setattr(resolve, "convert_gguf", fake_convert)
    monkeypatch.setenv("HONE_HOME", str(tmp_path))
    target = resolve.models_cache() / "m"
    assert ensure_converted(tmp_path / "x.gguf", target) == target
    assert ensure_converted(tmp_path / "x.gguf", target) == target
    assert len(calls) == 1
    assert [name for name, _, _ in cached_models()] == ["m"]


def test_inference_dtype_follows_the_precision_and_the_cpu() -> None:
    assert inference_dtype("fp32") == torch.float32
    assert inference_dtype("bf16") == torch.bfloat16
    assert inference_dtype("auto") == (torch.bfloat16 if cpu_bf16_native() else torch.float32)


@pytest.mark.parametrize("bf16", [True, False])
def test_evaluation_runs_on_a_cuda_gpu_when_there_is_one_in_its_native_precision(
    monkeypatch: pytest.MonkeyPatch, bf16: bool
) -> None:
    assert inference_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU here: its answers are stood in
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert inference_device() == "cuda"
    assert inference_dtype("auto", "cuda") == (torch.bfloat16 if bf16 else torch.float32)
    assert inference_dtype("fp32", "cuda") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device() == "cpu"
