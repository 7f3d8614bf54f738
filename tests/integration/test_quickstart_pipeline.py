"""The quickstart pipeline end to end on the tiny model: real data checks, real training steps, real
generation and scoring, and every artifact of the run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from hone import contract
from hone.config import load_config
from hone.contract import Ladder, TrainingMetrics
from hone.quickstart import run_quickstart


@pytest.fixture
def tiny_config(tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path]) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"""# hone quickstart -c {path}
model: {{reference: "{tiny_model_dir}", max_length: 256}}
data:
  train: {small_task["train"]}
  validation: {small_task["validation"]}
  test: {small_task["test"]}
train:
  adapter: {{kind: lora, r: 4, alpha: 8}}
  learning_rate: 1.0e-2
  max_steps: 4
  batch_size: 4
  eval_every: 2
  logging_steps: 1
evaluate: {{json_schema: {small_task["schema"]}, max_new_tokens: 8, batch_size: 4, few_shot: {{k: 2}},
           general: {{limit: 8, max_new_tokens: 4}}}}
run: {{name: tiny, dir: {tmp_path / "runs"}}}
""",
        encoding="utf-8",
    )
    return path


def test_quickstart_trains_evaluates_and_records_everything(tiny_config: Path) -> None:
    console = Console(record=True, width=160)
    run, evaluation = run_quickstart(load_config(tiny_config), console)

    manifest = run.manifest
    assert manifest.status == "completed"
    for relative in manifest.artifacts.values():
        assert (run.path / relative).exists(), relative
    assert manifest.artifacts["weights"] == "adapter"
    assert len(manifest.dataset.hash) == 64
    assert manifest.dataset.splits["test"].examples == 6
    assert manifest.code_version.hone
    assert manifest.tracking.run_id, "the run was logged to MLflow"
    assert set(manifest.metrics) >= {"json_valid", "schema_valid", "exact_match", "category_accuracy"}

    adapter = load_file(run.path / "adapter" / "adapter_model.safetensors")
    lora_b = {name: tensor for name, tensor in adapter.items() if "lora_B" in name}
    assert lora_b, "the adapter holds LoRA weights"
    unchanged = [name for name, tensor in lora_b.items() if float(tensor.abs().sum()) == 0.0]
    assert not unchanged, f"LoRA B starts at zero; these were never trained: {unchanged}"

    history = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in history if "loss" in row]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    assert any("eval_loss" in row for row in history)

    metrics = contract.read(TrainingMetrics, run.path / "metrics.json")
    assert metrics.training.steps == 4
    assert metrics.training.trained_tokens > 0
    assert metrics.training == manifest.training

    # the ladder is an evaluation run of its own, linked both ways; the training folder holds no ladder
    assert not (run.path / "ladder.json").exists() and not (run.path / "eval").exists()
    assert manifest.evaluation.status == "completed"
    assert (run.path / manifest.evaluation.run).resolve() == evaluation.path.resolve()
    judged = evaluation.manifest
    assert judged.kind == "evaluation" and judged.status == "completed"
    assert (evaluation.path / judged.evaluates).resolve() == run.path.resolve()
    ladder = contract.read(Ladder, evaluation.path / "ladder.json")
    # no knowledge base configured: the default ladder is zero-shot, few-shot and the run itself
    assert [rung.name for rung in ladder.rungs] == ["zero-shot", "few-shot", "tiny"]
    assert manifest.evaluation.recommendation == ladder.recommendation == judged.recommendation
    assert manifest.metrics["exact_match"] == ladder.rung("tiny").value("exact_match")
    for label in ("zero-shot", "few-shot", "tiny"):
        rows = [
            json.loads(line)
            for line in (evaluation.path / "eval" / f"{label}.jsonl").read_text().splitlines()
        ]
        assert len(rows) == 6 and all("output" in row and "reference" in row for row in rows)
    assert (evaluation.path / "report.html").is_file()
    assert judged.tracking is not None and judged.tracking.run_id != manifest.tracking.run_id

    assert "config.yaml" in manifest.artifacts.values()
    assert "max_steps: 4" in (run.path / "config.yaml").read_text()
    shown = console.export_text()
    assert "The ladder on 6 test examples" in shown and "Recommendation:" in shown


def test_prepared_dataset_trains_packed_records_its_version_and_registers(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hone.data.prepare import PrepareOptions, prepare_dataset
    from hone.data.sources import SourceSpec
    from hone.registry.lineage import lineage
    from hone.registry.store import Registry

    sources = [SourceSpec(small_task[name]) for name in ("train", "validation", "test")]
    folder = prepare_dataset(sources, tmp_path / "versions", PrepareOptions(fractions=(0.7, 0.15, 0.15)))
    version = json.loads((folder / "card.json").read_text())["version"]
    config = tmp_path / "packed.yaml"
    config.write_text(
        f"""# hone train -c {config}
model: {{reference: "{tiny_model_dir}", max_length: 512}}
data: {{dataset: {folder}}}
train: {{adapter: {{kind: lora, r: 4}}, learning_rate: 1.0e-2, max_steps: 3, batch_size: 2, packing: true,
        logging_steps: 1}}
evaluate: {{max_new_tokens: 4, batch_size: 4, general: {{limit: 8}}}}
run: {{name: packed, dir: {tmp_path / "runs"}}}
registry: {{name: packed-model, promote_to: production}}
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("HONE_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    console = Console(record=True, width=160)
    run, _ = run_quickstart(load_config(config), console)
    manifest = run.manifest
    assert manifest.status == "completed"
    assert manifest.dataset.hash == version, "the run records the dataset version it trained on"
    history = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history if "loss" in row] == [1, 2, 3]
    assert all(math.isfinite(row["loss"]) for row in history if "loss" in row)
    adapter = load_file(run.path / "adapter" / "adapter_model.safetensors")
    assert all(float(t.abs().sum()) > 0 for name, t in adapter.items() if "lora_B" in name)

    # the quickstart registered the run and promoted it: no holder yet, so the target alone decided
    registry = Registry()
    production = registry.holder("packed-model", "production")
    assert production is not None and production.version == 1
    assert "Promoted packed-model/1 -> packed-model@production" in console.export_text()
    assert production.tags["hone.dataset_card_version"] == version
    assert (registry.folder(production) / "dataset" / "card.json").read_text() == (
        folder / "card.json"
    ).read_text()
    found, dataset, trained = lineage(registry, str(folder))  # forward from the dataset version
    assert found is None and dataset == version and [v.ref for v in trained] == ["packed-model/1"]


@pytest.mark.parametrize("adapter", ["qlora", "full"])
def test_other_adapters_train(adapter: str, tiny_config: Path, tiny_model_dir: Path) -> None:
    config = load_config(
        tiny_config, [f"train.adapter={adapter}", f"run.name={adapter}", "train.max_steps=2"]
    )
    run, _ = run_quickstart(config, Console(record=True, width=160))
    assert run.manifest.status == "completed"
    assert run.manifest.adapter == adapter
    weights = run.path / run.manifest.artifacts["weights"]
    history = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    assert all(math.isfinite(row["loss"]) for row in history if "loss" in row)
    if adapter == "qlora":
        trained = load_file(weights / "adapter_model.safetensors")
        assert all(float(t.abs().sum()) > 0 for name, t in trained.items() if "lora_B" in name)
    else:
        before = load_file(tiny_model_dir / "model.safetensors")
        after = load_file(weights / "model.safetensors")
        unchanged = [name for name, tensor in before.items() if torch.equal(tensor, after[name])]
        assert not unchanged, f"full fine-tuning left these weights untouched: {unchanged}"
