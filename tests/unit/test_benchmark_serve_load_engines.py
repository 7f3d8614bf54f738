"""benchmarks/serve_load.py --engine: `hone serve` once per engine, each answering every request, and the
ratio of each other engine's tokens over the transformers engine's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def test_each_engine_is_a_server_of_its_own_and_the_ratio_is_of_their_tokens(
    tiny_model_dir: Path, benchmark_script: Callable[[str], ModuleType]
) -> None:
    pytest.importorskip("llama_cpp")
    bench = benchmark_script("serve_load")

    report = bench.run(["hone"], str(tiny_model_dir), [2], 4, 4, "fp32", ("transformers", "llama.cpp"))

    assert list(report["results"]) == ["hone", "hone[llama.cpp]"]
    for rows in report["results"].values():
        assert [row["clients"] for row in rows] == [2]
        assert rows[0]["errors"] == 0 and rows[0]["completed"] == rows[0]["requests"] == 8
    mine, theirs = report["results"]["hone[llama.cpp]"][0], report["results"]["hone"][0]
    ratio = mine["output_tokens_per_second"] / theirs["output_tokens_per_second"]
    assert report["engine_ratios"] == {"hone[llama.cpp]": {2: pytest.approx(ratio)}}
    assert report["ratios"] == {}, "no transformers serve to compare with"
