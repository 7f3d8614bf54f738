"""benchmarks/generation_speed.py on the tiny model: hand-written model.generate and hone's generator produce
the same greedy replies, every (configuration, batch size) is reported, and the ratios come from the measured
tokens/s. llama.cpp runs on the shipped GGUF when llama-cpp-python is installed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SMALL = ["--prompts", "3", "--max-new-tokens", "4", "--batch-sizes", "1", "2", "--rounds", "1"]


def test_prompts_end_before_the_reply(benchmark_script: Callable[[str], ModuleType]) -> None:
    bench = benchmark_script("generation_speed")
    prompts = bench.load_prompts(bench.TEST_SPLIT, 3)
    assert len(prompts) == 3
    assert [m["role"] for m in prompts[0]] == ["system", "user"]
    assert bench.up_to_eos([5, 7, 2, 2, 2], 2) == [5, 7, 2]
    assert bench.up_to_eos([5, 7], 2) == [5, 7]


def test_hone_matches_plain_and_every_entry_is_reported(
    tmp_path: Path, tiny_model_dir: Path, benchmark_script: Callable[[str], ModuleType]
) -> None:
    bench = benchmark_script("generation_speed")
    out = tmp_path / "generation.json"
    options = ["--model", str(tiny_model_dir), *SMALL, "--configs", "plain", "hone", "--threads", "1"]
    returned = bench.main([*options, "--out", str(out)])

    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["median"] == returned["median"]
    assert list(report["median"]) == ["plain", "hone"]
    assert {(r["config"], r["batch_size"]) for r in report["runs"]} == {
        (name, size) for name in ("plain", "hone") for size in (1, 2)
    }
    for by_batch in report["median"].values():
        assert list(by_batch) == ["1", "2"]
        for median in by_batch.values():
            assert median["requests"] == 3
            assert 3 <= median["tokens"] <= 3 * 4  # at least one token per reply, at most max_new_tokens
            assert median["tokens_per_second"] == pytest.approx(median["tokens"] / median["seconds"])
            assert median["agreement_with_plain"] == 1.0  # greedy fp32: the same replies, batched or not
    for size in ("1", "2"):
        plain, hone = report["median"]["plain"][size], report["median"]["hone"][size]
        assert hone["tokens"] == plain["tokens"]
        ratio = hone["tokens_per_second"] / plain["tokens_per_second"]
        assert report["ratios"]["hone/plain"][size] == pytest.approx(ratio)
    assert set(report["ratios"]) == {"hone/plain"}
    assert report["order"] == ["plain", "hone"]


def test_agreement_counts_identical_replies(benchmark_script: Callable[[str], ModuleType]) -> None:
    bench = benchmark_script("generation_speed")
    done = [bench.Completion("a", 1), bench.Completion(" b\n", 2), bench.Completion("c", 1)]
    reference = [bench.Completion("a", 1), bench.Completion("b", 2), bench.Completion("x", 1)]
    assert bench.agreement(done, reference) == pytest.approx(2 / 3)


def test_llama_cpp_answers_every_prompt(
    tmp_path: Path, tiny_model_dir: Path, benchmark_script: Callable[[str], ModuleType]
) -> None:
    pytest.importorskip("llama_cpp")
    from hone.models.resolve import ALIASES

    bench = benchmark_script("generation_speed")
    gguf = ALIASES["smollm2-135m-instruct"].locate()  # ~100 MB Q4_1: loads in about a second
    out = tmp_path / "generation.json"
    options = ["--model", str(tiny_model_dir), *SMALL, "--configs", "plain", "llama.cpp", "--threads", "1"]
    bench.main([*options, "--gguf", str(gguf), "--out", str(out)])

    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["settings"]["gguf"] == str(gguf)
    for median in report["median"]["llama.cpp"].values():
        assert median["requests"] == 3
        assert 3 <= median["tokens"] <= 3 * 4
        assert 0.0 <= median["agreement_with_plain"] <= 1.0  # another model than the tiny one: not compared
    assert set(report["ratios"]["llama.cpp/plain"]) == {"1", "2"}
