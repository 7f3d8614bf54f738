"""The transformers engine's continuous batching on the tiny model: requests that arrive while a batch is
decoding join it, finished ones leave it, and every answer is the one it gets when served alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hone.serve.engine import Detokenizer, Job, TransformersEngine
from hone.serve.models import Target

BASE = Target("base", "base")


class EndlessEngine(TransformersEngine):
    """Never stops on an end token, so a long job is still decoding when the short ones arrive."""

    def stop_tokens(self) -> set[int]:
        return set()


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def prompt(tokenizer: Any, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def served(engine: TransformersEngine, jobs: list[Job], gap: float = 0.0) -> list[float]:
    """Submit the jobs (the first, then the rest once it has decoded a few tokens) and wait for all;
    returns the moment each ended."""
    ended: dict[int, float] = {}
    done = threading.Event()

    def finished(index: int) -> None:
        ended[index] = time.perf_counter()
        if len(ended) == len(jobs):
            done.set()

    for index, job in enumerate(jobs):
        job.on_done = lambda index=index: finished(index)
    engine.start()
    try:
        engine.submit(jobs[0])
        while gap and len(jobs[0].tokens) < 3:
            time.sleep(0.001)
        for job in jobs[1:]:
            engine.submit(job)
        assert done.wait(120), "every job ends"
    finally:
        engine.stop()
    return [ended[index] for index in range(len(jobs))]


def test_requests_join_a_batch_in_flight_and_answer_as_alone(model: tuple[Any, Any]) -> None:
    network, tokenizer = model
    texts = ["Where is my parcel?", "Refund me please, the order arrived broken", "hi"]

    def jobs() -> list[Job]:
        long = Job(prompt(tokenizer, "Tell me everything about invoices"), BASE, max_tokens=120)
        short = [Job(prompt(tokenizer, text), BASE, max_tokens=8 + 4 * i) for i, text in enumerate(texts)]
        return [long, *short]

    alone = []
    for job in jobs():
        served(EndlessEngine(network, tokenizer, max_batch=1), [job])
        alone.append(job.text)

    engine = EndlessEngine(network, tokenizer, max_batch=8)
    together = jobs()
    ended = served(engine, together, gap=0.01)

    assert engine.joined == len(texts), "the short requests joined the long one's batch"
    assert [job.text for job in together] == alone, "joining and leaving a batch changes no answer"
    assert [job.finish_reason for job in together] == ["length"] * len(together)
    assert [len(job.tokens) for job in together] == [120, 8, 12, 16]
    assert max(ended[1:]) < ended[0], "the short requests finished while the long one still decoded"


def test_a_failed_prefill_fails_only_the_newcomers(model: tuple[Any, Any]) -> None:
    network, tokenizer = model
    engine = EndlessEngine(network, tokenizer, max_batch=4)
    long = Job(prompt(tokenizer, "Tell me about invoices"), BASE, max_tokens=60)
    broken = Job([network.config.vocab_size + 5], BASE, max_tokens=4)  # an id past the vocabulary
    served(engine, [long, broken], gap=0.01)
    assert broken.finish_reason == "error" and broken.error
    assert long.finish_reason == "length" and long.error is None and len(long.tokens) == 60


def test_the_detokenizer_streams_exactly_the_whole_decode(tokenizer: Any) -> None:
    text = "Ünïcödé 😀 invoices — \u00a0 twice,  spaced   out\nnew line"
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    detokenizer, pieces = Detokenizer(), []
    for end in range(1, len(tokens) + 1):
        pieces.append(detokenizer.add(tokenizer, tokens[:end]))
    assert "".join(pieces) == tokenizer.decode(tokens, skip_special_tokens=True)
    assert all("\ufffd" not in piece for piece in pieces), "no half characters are handed out"
