"""The embedded default model, for real: converted once from its GGUF with identical logits. `slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hone.models import resolve as resolve_module
from hone.models.resolve import (
    ALIASES,
    CONVERSION_RECORD,
    cached_models,
    load_model,
    load_tokenizer,
    resolve_model,
)
from hone.models.templates import training_chat_template

pytestmark = pytest.mark.slow


def test_alias_converts_once_with_identical_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    path = resolve_model("smollm2-135m-instruct")
    record = json.loads((path / CONVERSION_RECORD).read_text())
    assert record["source"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (path / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((path / "config.json").read_text())

    converted_at = (path / CONVERSION_RECORD).stat().st_mtime_ns
    with monkeypatch.context() as patch:  # benchmarks/model_resolve.py times the two calls

        def convert_again(gguf_path: Path, out_dir: Path) -> None:
            raise AssertionError(f"{gguf_path} converted again into {out_dir}")

        patch.setattr(resolve_module, "convert_gguf", convert_again)
        assert resolve_model("smollm2-135m-instruct") == path, "the cached conversion is reused"
    assert (path / CONVERSION_RECORD).stat().st_mtime_ns == converted_at
    assert [name for name, _, _ in cached_models()] == ["smollm2-135m-instruct"]

    gguf = ALIASES["smollm2-135m-instruct"].locate()
    reference = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    converted = load_model(path)
    tokenizer = load_tokenizer(path)
    batch = tokenizer(
        ["Hello, my invoice was charged twice.", "Sync stopped."], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        assert torch.equal(converted(**batch).logits, reference(**batch).logits)

    assert training_chat_template(tokenizer) is not None, "the converted tokenizer keeps the stock template"
    chat = [{"role": "user", "content": "What is 2+2?"}]
    ids = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = converted.generate(**ids, max_new_tokens=24, do_sample=False)
    assert "4" in tokenizer.decode(output[0, ids["input_ids"].shape[1] :])


@pytest.mark.parametrize("adapter", ["lora", "qlora"])
def test_sft_on_the_real_model_learns(adapter: str, tmp_path) -> None:
    """A few real steps on SmolLM2-135M: the loss on the example task falls (assistant tokens only)."""
    from rich.console import Console

    from hone.config import load_config
    from hone.quickstart import run_quickstart

    overrides = [
        f"train.adapter={adapter}",
        "train.max_steps=6",
        "train.batch_size=4",
        "train.logging_steps=1",
        "train.eval_every=null",
        "data.validation=null",
        "evaluate.limit=2",
        "evaluate.max_new_tokens=8",
        "evaluate.general.limit=8",
        # the whole ladder on the real model once (LoRA); QLoRA only against zero-shot
        *([] if adapter == "lora" else ["evaluate.rungs=[zero-shot]", "evaluate.general.enabled=false"]),
        f"run.dir={tmp_path}",
        f"run.name={adapter}",
    ]
    run, evaluation = run_quickstart(
        load_config("configs/quickstart.yaml", overrides), Console(record=True, width=160)
    )
    rows = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0], losses
    ladder = json.loads((evaluation.path / "ladder.json").read_text())
    if adapter == "lora":
        assert [rung["name"] for rung in ladder["rungs"]] == ["zero-shot", "few-shot", "rag", adapter]
        assert all(rung["general"]["perplexity"] > 1 for rung in ladder["rungs"])
    else:
        assert [rung["name"] for rung in ladder["rungs"]] == ["zero-shot", adapter]
