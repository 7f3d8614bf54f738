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
from hone.io import atomic_write_json
from hone.models.resolve import load_model, load_tokenizer
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
    max_logit_diff: float  # over the prompt's positions
    merged_output: str
    gguf_output: str


@dataclass
class ParityResult:
    quant: str
    prompt_source: str
    max_new_tokens: int
    prompts: list[PromptParity] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return sum(p.outputs_match and p.tokens_match for p in self.prompts)

    @property
    def max_logit_diff(self) -> float:
        return max((p.max_logit_diff for p in self.prompts), default=0.0)

    @property
    def ok(self) -> bool:
        """Lossy types (q8_0, q4_k_m, bf16) may change a greedy output; f32 and f16 should not."""
        return self.matched == len(self.prompts) or self.quant not in EXACT_TYPES

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(matched=self.matched, max_logit_diff=self.max_logit_diff, ok=self.ok)
        return record


def parity_prompts(run: FinishedRun, count: int = 3) -> tuple[list[tuple[str, str]], str]:
    """(label, rendered prompt) from the run's test (else validation) split, else a few fixed chats.

    A chat is cut before its last assistant turn and ends with the generation prompt; a document
    (continued pre-training) gives its first 200 characters.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.weights)
    data = run.config.data
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
        if prompts:
            return prompts, f"{split} split ({path})"
    system = [{"role": "system", "content": data.system_prompt}] if data.system_prompt else []
    return [prompt_text(tokenizer, system + chat, None) for chat in FALLBACK_CHATS], "fixed chats"


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
    not an error.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if prompts is None:
        labelled, source = parity_prompts(open_language_model_run(export.run, "export"))
    else:
        labelled, source = [(text[:60], text) for text in prompts], "given prompts"
    folder, name = str(export.model.parent), export.model.name
    try:
        gguf_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise HoneError(
            f"{export.model}: transformers cannot read this GGUF back ({exc}); the export is complete, "
            "run again with --no-parity to skip the check"
        ) from None
    tokenizer = load_tokenizer(export.merged)
    merged = load_model(export.merged).eval()
    result = ParityResult(quant=export.quant, prompt_source=source, max_new_tokens=max_new_tokens)
    models = (merged, gguf_model.eval())
    for label, text in labelled:
        row = compare_prompt(text, tokenizer, gguf_tokenizer, models, max_new_tokens)
        result.prompts.append(PromptParity(label, text, *row))
    atomic_write_json(export.folder / PARITY_RECORD, result.to_dict())
    return result


def compare_prompt(
    text: str, tokenizer: Any, gguf_tokenizer: Any, models: tuple[Any, Any], max_new_tokens: int
) -> tuple[bool, bool, float, str, str]:
    """Same token ids, same greedy output, largest logit difference, and both outputs."""
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
    return (
        gguf_ids == batch["input_ids"][0].tolist(),
        outputs[0] == outputs[1],
        float((logits[0] - logits[1]).abs().max()),
        tokenizer.decode(outputs[0]),
        tokenizer.decode(outputs[1]),
    )


def parity_table(result: ParityResult) -> Table:
    table = Table(
        title=f"Parity, greedy: merged model vs {result.quant} GGUF on {result.prompt_source}",
        caption=f"{result.matched}/{len(result.prompts)} prompts identical",
    )
    for column in ("prompt", "same tokens", "same output", "max |logit diff|"):
        table.add_column(column)
    for row in result.prompts:
        table.add_row(row.label, str(row.tokens_match), str(row.outputs_match), f"{row.max_logit_diff:.2e}")
    return table
