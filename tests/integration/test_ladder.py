"""The decision ladder end to end on the tiny model: every rung kind, real statistics, real files.

Rungs: zero-shot, few-shot and RAG on the base, a LoRA run trained here, and a hosted "API" rung: an
OpenAI-compatible endpoint on 127.0.0.1 that answers with the same tiny base model, so its answers must
equal the zero-shot rung's.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from hone import contract
from hone.config import HoneConfig, load_config
from hone.contract import Ladder
from hone.evaluate import baselines
from hone.evaluate.generate import generate_chat
from hone.evaluate.ladder import prepare, run_ladder
from hone.models.resolve import load_model, load_tokenizer
from hone.runs import RunFolder
from hone.train.pipeline import run_training

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support-tickets"
LM_EVAL_TASKS = Path(__file__).resolve().parents[1] / "assets" / "lm_eval"


@pytest.fixture
def chat_server(tiny_model_dir: Path) -> Iterator[str]:
    """A minimal OpenAI-compatible chat endpoint over the tiny model (greedy, like the ladder's rungs)."""
    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions" and body["temperature"] == 0
            [answer] = generate_chat(model, tokenizer, [body["messages"]], body["max_tokens"], 1)
            reply = {
                "choices": [{"message": {"role": "assistant", "content": answer.text}}],
                "usage": {
                    "prompt_tokens": answer.prompt_tokens,
                    "completion_tokens": answer.completion_tokens,
                },
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def trained_run_and_evaluation_folder(config_file: Path) -> tuple[HoneConfig, RunFolder, RunFolder]:
    """The config, a run trained from it, and a new evaluation run folder named "ev"."""
    config = load_config(config_file)
    trained = run_training(config, Console(width=160), track=False)
    evaluation = RunFolder.create(
        config.model_copy(update={"run": config.run.model_copy(update={"name": "ev"})}), "evaluation"
    )
    return config, trained, evaluation


def test_ladder_measures_every_rung_and_recommends(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path], chat_server: str
) -> None:
    config_file = tmp_path / "ladder.yaml"
    config_file.write_text(
        f"""
model: {{reference: "{tiny_model_dir}", max_length: 256}}
data: {{train: {small_task["train"]}, validation: {small_task["validation"]}, test: {small_task["test"]}}}
train: {{adapter: {{kind: lora, r: 4, alpha: 8}}, learning_rate: 1.0e-2, max_steps: 2, batch_size: 4,
        eval_every: 1, logging_steps: 1}}
evaluate:
  json_schema: {small_task["schema"]}
  max_new_tokens: 6
  batch_size: 4
  precision: fp32  # the hosted rung's server generates in fp32 at batch 1: its answers must match
  few_shot: {{k: 2}}
  rag: {{knowledge: {EXAMPLE / "knowledge"}, top_k: 1}}
  target: {{metric: json_valid, min: 0.5}}
  bootstrap_resamples: 200
  general: {{limit: 8, max_new_tokens: 4, lm_eval_tasks: [hone_tiny_choice], lm_eval_include: {LM_EVAL_TASKS},
            lm_eval_limit: 4}}
  judge: {{model: "{tiny_model_dir}", max_score: 5}}
  reference_loss: true
  api: [{{name: hosted, base_url: "{chat_server}", model: tiny, input_price: 0.15, output_price: 0.6}}]
run: {{dir: {tmp_path / "runs"}}}
""",
        encoding="utf-8",
    )
    config, trained, evaluation = trained_run_and_evaluation_folder(config_file)
    console = Console(record=True, width=200)
    result = run_ladder(prepare(config, [trained.path]), evaluation, console)
    ladder = result.model_dump(mode="json")

    names = [rung["name"] for rung in ladder["rungs"]]
    assert names == ["zero-shot", "few-shot", "rag", trained.path.name, "hosted"]
    assert ladder["task"]["examples"] == 6 and ladder["primary_metric"] == "json_valid"
    for rung in ladder["rungs"]:
        for scores in rung["metrics"].values():
            assert scores["low"] <= scores["value"] <= scores["high"]
        assert rung["latency"]["p95_seconds"] >= rung["latency"]["p50_seconds"] > 0
        assert rung["cost"]["per_1000_requests"] > 0
    zero, few, rag, tuned, hosted = ladder["rungs"]
    assert few["tokens"]["prompt_mean"] > zero["tokens"]["prompt_mean"], "worked examples lengthen prompts"
    assert rag["tokens"]["prompt_mean"] > zero["tokens"]["prompt_mean"]
    assert tuned["training"]["train_seconds"] > 0 and tuned["cost"]["training_one_off"] > 0
    assert [row["step"] for row in tuned["training"]["history"] if row["loss"] is not None] == [1, 2]
    assert tuned["general"]["probe_accuracy"] >= 0 and tuned["general"]["perplexity"] > 1
    assert zero["general"]["delta_probe_accuracy"] == 0, "prompting leaves the weights alone"
    # the judge (the tiny model itself) graded every rung: a score per example, unusable replies counted
    for rung in ladder["rungs"]:
        assert 0 <= rung["metrics"]["judge"]["value"] <= 1 and 0 <= rung["judge_unparsed"] <= 6
    # loss of the reference answers under each local model and prompt; a hosted API gives no likelihoods
    for rung in (zero, few, rag, tuned):
        figures = rung["reference_loss"]
        assert figures["loss"] > 0 and figures["perplexity"] == pytest.approx(math.exp(figures["loss"]))
    assert hosted["reference_loss"] is None
    # a local lm-evaluation-harness task, offline, before and after
    assert 0 <= tuned["general"]["lm_eval"]["hone_tiny_choice"]["acc"] <= 1
    assert zero["general"]["delta_lm_eval"]["hone_tiny_choice"]["acc"] == 0

    # the hosted rung runs the same model greedily: the same answers as zero-shot, priced per token
    predictions = {
        name: [json.loads(line) for line in (evaluation.path / f"eval/{name}.jsonl").read_text().splitlines()]
        for name in names
    }
    assert [p["output"] for p in predictions["hosted"]] == [p["output"] for p in predictions["zero-shot"]]
    expected = (hosted["tokens"]["prompt_mean"] * 0.15 + hosted["tokens"]["completion_mean"] * 0.6) / 1000
    assert hosted["cost"]["per_1000_requests"] == pytest.approx(expected, rel=1e-4)
    assert all(len(rows) == 6 and "scores" in rows[0] for rows in predictions.values())
    assert all(len(row["context"]) == 1 for row in predictions["rag"])

    baseline = ladder["baseline"]
    assert baseline in ("zero-shot", "few-shot", "rag")
    for rung in ladder["rungs"]:
        if rung["name"] == baseline:
            assert rung["significance"] is None
            continue
        significance = rung["significance"]
        assert significance["vs"] == baseline and 0 < significance["p_value"] <= 1
        flips = rung["flips"]
        assert flips["fixed_count"] == len(flips["fixed"]) and flips["broken_count"] == len(flips["broken"])
    if ladder["recommendation"]["rung"] is not None:
        assert ladder["recommendation"]["rung"] in names

    assert contract.read(Ladder, evaluation.path / "ladder.json") == result
    html = (evaluation.path / "report.html").read_text()
    assert 'data-chart="metric"' in html and trained.path.name in html
    artifacts = evaluation.manifest.artifacts
    assert artifacts["ladder"] == "ladder.json" and artifacts["report"] == "report.html"


def test_ladder_runs_every_local_model_in_the_configured_precision(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import hone.evaluate.ladder as ladder_module

    config_file = tmp_path / "bf16.yaml"
    config_file.write_text(
        f"""
model: {{reference: "{tiny_model_dir}", max_length: 256}}
data: {{train: {small_task["train"]}, test: {small_task["test"]}}}
train: {{adapter: {{kind: lora, r: 4, alpha: 8}}, max_steps: 1, batch_size: 4, precision: fp32}}
evaluate:
  {{max_new_tokens: 4, batch_size: 4, rungs: [zero-shot], precision: bf16, general: {{enabled: false}}}}
run: {{dir: {tmp_path / "runs"}}}
""",
        encoding="utf-8",
    )
    config, trained, evaluation = trained_run_and_evaluation_folder(config_file)
    dtypes: dict[str, torch.dtype] = {}
    devices: set[str] = set()
    answer_all = ladder_module.answer_all

    def recording(name: str, model: torch.nn.Module, *args: object) -> object:
        dtypes[name] = next(model.parameters()).dtype
        devices.add(next(model.parameters()).device.type)
        return answer_all(name, model, *args)

    monkeypatch.setattr(ladder_module, "answer_all", recording)
    ladder = run_ladder(prepare(config, [trained.path]), evaluation, Console(width=160))

    assert dtypes == {"zero-shot": torch.bfloat16, trained.path.name: torch.bfloat16}
    assert ladder.precision == "bfloat16"
    assert devices == {ladder.device} == {"cuda" if torch.cuda.is_available() else "cpu"}
    # the zero-shot answers are the base model's own in bf16
    prompts = baselines.zero_shot(prepare(config, []).test).prompts
    model = load_model(tiny_model_dir, dtype=torch.bfloat16)
    direct = generate_chat(model, load_tokenizer(tiny_model_dir), prompts, max_new_tokens=4, batch_size=4)
    rows = (evaluation.path / "eval/zero-shot.jsonl").read_text().splitlines()
    assert [json.loads(row)["output"] for row in rows] == [g.text for g in direct]
