"""Shared fixtures: an isolated hone home, the real SmolLM2 tokenizer, and a tiny random llama.

The tiny model (2 layers, hidden 64) is built from a config with the real tokenizer, so templating and
masking are tested on the real vocabulary while training steps take milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "support-tickets"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets the same session-wide HONE_HOME, never the user's cache."""
    home = tmp_path_factory.getbasetemp() / "hone-home"
    monkeypatch.setenv("HONE_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HONE_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    return home


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from hone.models.resolve import ALIASES

    saved = os.environ.get("HONE_TEST_TOKENIZER")  # a saved copy where the model's package is not installed
    if saved:  # (GPU machines: benchmarks/device/kit.sh writes .kit/tokenizer)
        return AutoTokenizer.from_pretrained(saved)
    gguf = ALIASES["smollm2-135m-instruct"].locate()
    loaded = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return loaded


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A second family: a tiny Qwen2 (biased q/k/v) whose layers mix sliding-window and full attention."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        use_sliding_window=True,
        sliding_window=4,  # shorter than the test sequences, so the window matters
        max_window_layers=1,
        layer_types=["full_attention", "sliding_attention", "full_attention"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def benchmark_script(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Imports a script of benchmarks/ (scripts, not a package) by its name, for this test only."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    """benchmarks/train_throughput.py, running each configuration in this process instead of a fresh one."""
    script = benchmark_script("train_throughput")

    def measure(name: str, spec: dict[str, Any], folder: Path) -> dict[str, Any]:
        spec = script.run_spec(name, spec, folder)
        script.child(spec)
        return json.loads(Path(spec["result"]).read_text(encoding="utf-8"))

    monkeypatch.setattr(script, "measure", measure)
    return script


@pytest.fixture
def small_task(tmp_path: Path) -> dict[str, Path]:
    """A few examples of each split of the shipped task, copied into a temp folder."""
    sizes = {"train": 24, "validation": 8, "test": 6}
    paths = {}
    for split, size in sizes.items():
        lines = (EXAMPLE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:size]
        paths[split] = tmp_path / f"{split}.jsonl"
        paths[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths["schema"] = EXAMPLE / "schema.json"
    return paths


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
