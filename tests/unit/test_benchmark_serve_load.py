"""benchmarks/serve_load.py: both servers start as processes of their own on loopback, answer every request
of every client level, and the figures and the ratio come from what they answered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def test_both_servers_answer_every_client_and_the_ratio_is_of_their_tokens(
    tiny_model_dir: Path, benchmark_script: Callable[[str], ModuleType]
) -> None:
    bench = benchmark_script("serve_load")

    report = bench.run(["hone", "transformers"], str(tiny_model_dir), [1, 4], 2, 4, "fp32")

    for server in ("hone", "transformers"):
        rows = report["results"][server]
        assert [row["clients"] for row in rows] == [1, 4]
        for row in rows:
            assert row["errors"] == 0 and row["completed"] == row["requests"] >= 8
            assert row["output_tokens_per_second"] > 0 and row["p50_seconds"] <= row["p99_seconds"]
            assert row["rss_mib_after"] > 0, "the server's own memory, read from /proc"
    for clients, ratio in report["ratios"].items():
        mine = next(r for r in report["results"]["hone"] if r["clients"] == clients)
        theirs = next(r for r in report["results"]["transformers"] if r["clients"] == clients)
        assert ratio == pytest.approx(mine["output_tokens_per_second"] / theirs["output_tokens_per_second"])


def test_the_prompts_are_the_test_split_up_to_the_answer(
    benchmark_script: Callable[[str], ModuleType],
) -> None:
    chats = benchmark_script("serve_load").prompts(5)
    assert len(chats) == 5 and all(chat[-1]["role"] == "user" for chat in chats)
