"""benchmarks/train_throughput.py on the tiny model: every configuration trains, the report has all of them
with positive throughput and a finite validation loss. Runs each configuration in this process (the script
runs each in a fresh one) to stay fast."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch


def test_report_has_every_configuration(
    tmp_path: Path, tiny_model_dir: Path, small_task: dict[str, Path], bench: ModuleType
) -> None:
    out = tmp_path / "throughput.json"
    options = ["--model", str(tiny_model_dir), "--steps", "2", "--rounds", "1", "--batch-size", "2"]
    options += ["--train", str(small_task["train"]), "--validation", str(small_task["validation"])]
    bench.main([*options, "--val-examples", "4", "--out", str(out)])

    report = json.loads(out.read_text(encoding="utf-8"))
    assert list(report["median"]) == ["trl-defaults", "trl-tuned", "hone"]
    for median in report["median"].values():
        assert median["tokens_per_second"] > 0
        assert median["labelled_tokens_per_second"] > 0
        assert math.isfinite(median["validation_loss"])
        assert median["model_tflops"] > 0 and median["mfu"] is None  # no known peak on a CPU
    assert set(report["ratios"]) == {"hone/trl-defaults", "hone/trl-tuned"}
    runs = {name: results[0] for name, results in report["runs"].items()}
    # The same examples in every step, and tuned TRL trains the same model as hone (same labels, same init).
    assert runs["trl-defaults"]["tokens_per_step"] == runs["hone"]["tokens_per_step"]
    assert runs["trl-tuned"]["labelled_per_step"] == runs["hone"]["labelled_per_step"]
    assert runs["trl-defaults"]["labelled_per_step"] > runs["hone"]["labelled_per_step"]  # the whole chat
    assert runs["trl-tuned"]["validation_loss"] == pytest.approx(runs["hone"]["validation_loss"], rel=1e-3)


def test_a_random_model_of_a_public_shape_is_written_and_benchmarked(
    tmp_path: Path,
    tiny_model_dir: Path,
    small_task: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    bench: ModuleType,
) -> None:
    shapes = sys.modules["model_shapes"]
    sizes = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4}
    monkeypatch.setitem(shapes.SHAPES, "tiny-qwen2", {**shapes.SHAPES["qwen2.5-0.5b"], **sizes})
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = shapes.write_random_model("tiny-qwen2", tmp_path / "m", tiny_model_dir)
    config = AutoConfig.from_pretrained(folder)
    assert (config.model_type, config.hidden_size, config.vocab_size) == ("qwen2", 64, 151936)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert (folder / "tokenizer.json").is_file()

    out = tmp_path / "throughput.json"
    options = ["--shape", "tiny-qwen2", "--model", str(tiny_model_dir), "--steps", "2", "--rounds", "1"]
    options += ["--train", str(small_task["train"]), "--validation", str(small_task["validation"])]
    options += ["--batch-size", "2", "--val-examples", "2", "--configs", "hone", "--out", str(out)]
    report = bench.main(options)
    assert report["settings"]["shape"] == "tiny-qwen2" and report["median"]["hone"]["tokens_per_second"] > 0
    assert json.loads(out.read_text(encoding="utf-8"))["settings"]["shape"] == "tiny-qwen2"


@pytest.mark.parametrize("shape", ["qwen2.5-0.5b", "llama-3.2-1b", "llama-3.1-8b", "smollm2-135m"])
def test_model_flops_count_every_matrix_product_of_the_architecture(shape: str, bench: ModuleType) -> None:
    """linear_weights against the architecture transformers builds (on the meta device: no memory), and
    the forward FLOPs of a tiny model against torch's own FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig, AutoModelForCausalLM

    shapes = sys.modules["model_shapes"]  # imported by the script
    fields = dict(shapes.SHAPES[shape])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert shapes.linear_weights(config) == linear

    sizes = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "vocab_size": 512}
    heads = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
    small = AutoConfig.for_model(config.model_type, **fields | sizes | heads, attn_implementation="eager")
    tiny = AutoModelForCausalLM.from_config(small)
    n = 12
    with FlopCounterMode(display=False) as counter:
        tiny(input_ids=torch.randint(0, 512, (1, n)))
    width = small.num_attention_heads * small.head_dim
    # eager attention multiplies every (query, key) pair, n^2, where causal training needs n(n+1)/2
    dense = 2 * 2 * width * n * n * small.num_hidden_layers
    assert counter.get_total_flops() == 2 * shapes.linear_weights(small) * n + dense
    causal = 4 * shapes.linear_weights(small) * n + 3 * 2 * 2 * width * (n * (n + 1) // 2) * 2
    assert shapes.training_flops(small, n, n * (n + 1) // 2) == causal


def test_examples_are_counted_within_packed_rows(bench: ModuleType) -> None:
    assert bench.sequence_lengths({"input_ids": [1] * 7}) == [7]
    assert bench.sequence_lengths({"input_ids": [1] * 7, "position_ids": [0, 1, 2, 0, 1, 0, 1]}) == [3, 2, 2]
    assert bench.sequence_lengths({"input_ids": [1] * 7, "seq_lengths": [4, 3]}) == [4, 3]
    labels = torch.tensor([[-100, 5, 6, 7, 8, 9, 1]])
    packed = {"input_ids": [1] * 7, "seq_lengths": [4, 3]}
    counts = bench.batch_counts([packed], {"labels": labels, "input_ids": labels})
    assert counts["attention_pairs"] == 4 * 5 // 2 + 3 * 4 // 2 and counts["tokens"] == 7
