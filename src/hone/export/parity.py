"""Parity: the GGUF against the merged model it came from, greedy, prompt by prompt."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from hone.data.load import load_split
from hone.errors import HoneError
from hone.export.gguf import EXACT_TYPES, GGUFExport
from hone.export.merge import verify_export
from hone.export.ollama import modelfile_system
from hone.io import atomic_write_json
from hone.models.resolve import code_policy, load_model, load_tokenizer
from hone.runs import FinishedRun, open_language_model_run

logger = logging.getLogger(__name__)

PARITY_RECORD = "parity.json"

FALLBACK_CHATS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
    [{"role": "user", "content": "List three prime numbers."}],
]


@dataclass
class PromptParity:
    label: str  # the prompt's last message (or its first characters), for a summary table
    prompt: str
    tokens_match: bool  # the GGUF's own tokenizer reads the prompt as the same token ids
    outputs_match: bool  # greedy generations are identical, token for token
    max_logit_diff: float | None  # over the prompt's positions; None when either side's are not finite
    merged_output: str
    gguf_output: str
    problem: str | None = None  # why this prompt proves nothing: NaN logits, an empty generation


@dataclass
class ParityResult:
    quant: str
    prompt_source: str
    max_new_tokens: int
    prompts: list[PromptParity] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return sum(p.outputs_match and p.tokens_match and not p.problem for p in self.prompts)

    @property
    def max_logit_diff(self) -> float | None:
        """None when a prompt's logits were not finite: no difference to them means anything."""
        diffs = [p.max_logit_diff for p in self.prompts]
        return None if None in diffs else max((d for d in diffs if d is not None), default=0.0)

    @property
    def problems(self) -> list[str]:
        return [f"{p.label}: {p.problem}" for p in self.prompts if p.problem]

    @property
    def ok(self) -> bool:
        """Lossy types (q8_0, q4_k_m, bf16) may change a greedy output; f32 and f16 should not. Two
        empty generations, or two of NaN logits, are identical and still fail: they check nothing."""
        if self.problems:
            return False
        return self.matched == len(self.prompts) or self.quant not in EXACT_TYPES

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(
            matched=self.matched, max_logit_diff=self.max_logit_diff, problems=self.problems, ok=self.ok
        )
        return record


def parity_prompts(
    run: FinishedRun, count: int = 3, modelfile: Path | None = None
) -> tuple[list[tuple[str, str]], str]:
    """(label, rendered prompt) from the run's test (else validation) split, else a few fixed chats.

    A chat is cut before its last assistant turn and ends with the generation prompt; a document
    (continued pre-training) gives its first 200 characters. With the export's Modelfile, prompts are
    also sent as `ollama run` sends them, without a system message: the Modelfile's SYSTEM stands in (the
    template's default where it has none), so a Modelfile that lost the trained system prompt shows.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.weights, **code_policy(run.weights, run.config.model))
    data = run.config.data
    served = modelfile_system(modelfile.read_text(encoding="utf-8")) if modelfile else data.system_prompt
    for split in ("test", "validation"):
        path = getattr(data, split)
        if path is None or not Path(path).exists():
            continue
        try:
            examples = load_split(Path(path), data.system_prompt, data.format)[:count]
        except HoneError as exc:
            logger.warning("parity prompts: %s unreadable (%s); using fixed chats", path, exc)
            break
        prompts = [prompt_text(tokenizer, e.messages, e.text) for e in examples]
        if modelfile is not None:
            prompts += as_ollama_sends(tokenizer, [e.messages for e in examples], served)
        if prompts:
            return prompts, f"{split} split ({path})"
    system = [{"role": "system", "content": served}] if served else []
    return [prompt_text(tokenizer, system + chat, None) for chat in FALLBACK_CHATS], "fixed chats"


def as_ollama_sends(
    tokenizer: Any, chats: list[list[dict[str, Any]]], served: str | None
) -> list[tuple[str, str]]:
    """The first chat that starts with a system message, without it, as a client of the Ollama model sends
    it: the Modelfile's SYSTEM `served` takes its place (the template adds its default when that is None)."""
    chat = next((chat for chat in chats if chat and chat[0]["role"] == "system"), None)
    if chat is None:
        return []
    system = [{"role": "system", "content": served}] if served else []
    label, text = prompt_text(tokenizer, system + chat[1:], None)
    return [(f"no system message: {label}", text)]


def prompt_text(tokenizer: Any, messages: list[dict[str, Any]], document: str | None) -> tuple[str, str]:
    if not messages:
        return (document or "")[:60], (document or "")[:200]
    chat = [{"role": m["role"], "content": m["content"]} for m in messages]
    while len(chat) > 1 and chat[-1]["role"] == "assistant":
        chat.pop()
    label = " ".join(chat[-1]["content"].split())[:60]
    return label, tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def parity_check(
    export: GGUFExport, prompts: list[str] | None = None, max_new_tokens: int = 32
) -> ParityResult:
    """Generate greedily with the merged model and with the GGUF (dequantized by transformers).

    Reports, per prompt, whether the GGUF tokenizer reads it the same, whether the outputs are equal,
    and the largest logit difference; written to parity.json. A lossy type's mismatch is a finding,
    not an error. Both exports are read only after their files match the sha256 their export.json records.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for written in (export.merged, export.folder):
        verify_export(written)
    run = open_language_model_run(export.run, "export")
    if prompts is None:
        labelled, source = parity_prompts(run, modelfile=export.modelfile)
    else:
        labelled, source = [(text[:60], text) for text in prompts], "given prompts"
    folder, name = str(export.model.parent), export.model.name
    no_code = {"gguf_file": name, "trust_remote_code": False}  # a GGUF holds tensors and metadata, no code
    try:
        gguf_tokenizer = AutoTokenizer.from_pretrained(folder, **no_code)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **no_code)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise HoneError(
            f"{export.model}: transformers cannot read this GGUF back ({exc}); the export is complete, "
            "run again with --no-parity to skip the check"
        ) from None
    tokenizer = load_tokenizer(export.merged, run.config.model)
    merged = load_model(export.merged, opt_in=run.config.model).eval()
    result = ParityResult(quant=export.quant, prompt_source=source, max_new_tokens=max_new_tokens)
    models = (merged, gguf_model.eval())
    for label, text in labelled:
        row = compare_prompt(text, tokenizer, gguf_tokenizer, models, max_new_tokens)
        result.prompts.append(PromptParity(label, text, *row))
    atomic_write_json(export.folder / PARITY_RECORD, result.to_dict())
    return result


def compare_prompt(
    text: str, tokenizer: Any, gguf_tokenizer: Any, models: tuple[Any, Any], max_new_tokens: int
) -> tuple[bool, bool, float | None, str, str, str | None]:
    """Same token ids, same greedy output, largest logit difference, both outputs, and what makes the
    comparison void (see `void_comparison`)."""
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    gguf_ids = gguf_tokenizer(text, add_special_tokens=False)["input_ids"]
    options = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    start = batch["input_ids"].shape[1]
    with torch.no_grad():
        logits = [model(**batch).logits for model in models]
        outputs = [model.generate(**batch, **options)[0, start:].tolist() for model in models]
    finite = all(bool(torch.isfinite(side).all()) for side in logits)
    return (
        gguf_ids == batch["input_ids"][0].tolist(),
        outputs[0] == outputs[1],
        float((logits[0] - logits[1]).abs().max()) if finite else None,
        tokenizer.decode(outputs[0]),
        tokenizer.decode(outputs[1]),
        void_comparison(logits, [tokenizer.decode(o, skip_special_tokens=True) for o in outputs]),
    )


def void_comparison(logits: list[torch.Tensor], texts: list[str]) -> str | None:
    """Why two generations prove nothing even when they are equal: NaN or infinite logits (argmax of
    NaN picks the same token on both sides), or a generation with no text (a model that only says
    end-of-text matches any other that does, whatever its weights)."""
    problems = []
    for side, side_logits, generated in zip(("merged model", "GGUF"), logits, texts, strict=True):
        if not bool(torch.isfinite(side_logits).all()):
            problems.append(f"the {side}'s logits are NaN or infinite")
        elif not generated:
            problems.append(f"the {side} generated no text (only end-of-text or special tokens)")
    return "; ".join(problems) or None


def parity_table(result: ParityResult) -> Table:
    table = Table(
        title=f"Parity, greedy: merged model vs {result.quant} GGUF on {result.prompt_source}",
        caption=f"{result.matched}/{len(result.prompts)} prompts identical",
    )
    columns = ["prompt", "same tokens", "same output", "max |logit diff|"]
    for column in columns + (["problem"] if result.problems else []):
        table.add_column(column)
    for row in result.prompts:
        diff = "n/a" if row.max_logit_diff is None else f"{row.max_logit_diff:.2e}"
        problem = [row.problem or ""] if result.problems else []
        table.add_row(row.label, str(row.tokens_match), str(row.outputs_match), diff, *problem)
    return table
