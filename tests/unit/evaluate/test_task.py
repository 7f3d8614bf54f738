"""A rung's answers on the tiny model: off a terminal, progress comes as plain lines."""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch
from rich.console import Console

from hone.evaluate.task import answer_all


def test_answering_piped_to_a_log_prints_plain_progress_lines(tiny_model_dir: Path, tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts = [[{"role": "user", "content": f"ticket {n}"}] for n in range(4)]
    buffer = io.StringIO()
    answers = answer_all(
        "zero-shot", model, tokenizer, prompts, 2, 1, Console(file=buffer, force_terminal=False)
    )
    assert len(answers.outputs) == 4
    log = buffer.getvalue()
    assert "\x1b" not in log
    lines = log.splitlines()
    # one batch at a time, each a tenth or more of the prompts: a line for each
    pattern = r"zero-shot: (\d)/4 \((\d+)%\)  elapsed \d:\d\d:\d\d  ETA \d:\d\d:\d\d"
    assert [re.fullmatch(pattern, line).groups() for line in lines[:-1]] == [  # type: ignore[union-attr]
        ("1", "25"),
        ("2", "50"),
        ("3", "75"),
        ("4", "100"),
    ]
    assert re.fullmatch(r"  zero-shot: 4 answers in \d+ s", lines[-1])


def test_answering_on_a_terminal_prints_no_plain_lines(tiny_model_dir: Path, tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts = [[{"role": "user", "content": f"ticket {n}"}] for n in range(2)]
    buffer = io.StringIO()
    answer_all("zero-shot", model, tokenizer, prompts, 2, 1, Console(file=buffer, force_terminal=True))
    drawn = buffer.getvalue()
    assert "━" in drawn, "the live bar, as before"
    assert "elapsed" not in drawn and "%)" not in drawn
