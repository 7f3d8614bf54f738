"""Export a finished run: a merged safetensors model, a GGUF for llama.cpp and Ollama, a parity check.

    <run>/export/
      merged/           the adapter merged into its base: a plain Hugging Face folder, plus export.json
      gguf-<quant>/     <run>-<quant>.gguf, <run>-lora-<type>.gguf (LoRA runs), Modelfile, export.json,
                        parity.json

Every folder is written into a temporary sibling and renamed into place when complete, so a failed
export never leaves a folder that looks usable. GGUF files are written by llama.cpp's own converters,
so they load in llama.cpp and Ollama exactly as files converted by hand would.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from hone.data.load import load_split
from hone.errors import HoneError
from hone.io import atomic_write_json, atomic_write_text, staged_folder
from hone.models.resolve import load_model, load_tokenizer
from hone.models.trained import merged_model
from hone.runs import FinishedRun, RunFolder, code_version, now, open_language_model_run
from hone.train.llama_cpp import llama_cpp_tools, llama_quantize, run_tools, tools_version
from hone.train.ollama import modelfile

logger = logging.getLogger(__name__)

EXPORT_RECORD = "export.json"
PARITY_RECORD = "parity.json"


CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")  # written by convert_hf_to_gguf.py itself
QUANTIZE_TYPES = {"q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K"}  # need llama-quantize
EXACT_TYPES = ("f32", "f16")  # greedy outputs are expected to match the merged model exactly

QLORA_REFUSAL = (
    "{run}: this QLoRA adapter was trained against the NF4-rounded base weights, not the original ones. "
    "Merging it into the full-precision base gives a different model from the one that was trained, and "
    "merging it into the 4-bit base re-rounds every merged weight to NF4, losing most of the update. "
    "Use --dequantize: hone loads the base in 4-bit exactly as in training, dequantizes it to fp32 and "
    "merges the adapter into that, which is the model that was trained (at the size of an fp32 model)."
)

FALLBACK_CHATS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
    [{"role": "user", "content": "List three prime numbers."}],
]


@dataclass(frozen=True)
class GGUFExport:
    run: Path
    folder: Path
    model: Path
    merged: Path
    quant: str
    modelfile: Path
    lora: Path | None
    lora_skipped: str | None


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


def record_export(folder: Path, run: FinishedRun, kind: str, **details: Any) -> None:
    record = {
        "kind": kind,
        "source_run": str(run.path.resolve()),
        "run_name": run.name,
        "adapter": run.kind,
        "base_model": run.config.model.reference,
        "created_at": now(),
        "code_version": code_version(),
        **details,
    }
    atomic_write_json(folder / EXPORT_RECORD, record)


def record_artifact(run: FinishedRun, name: str, folder: Path) -> None:
    """Exports inside the run folder are recorded relative to it, others by their full path."""
    try:
        relative = str(folder.resolve().relative_to(run.path.resolve()))
    except ValueError:
        relative = str(folder.resolve())
    RunFolder(run.path).update(artifacts={name: relative})


def merge(run_path: Path, out: Path | None = None, dequantize: bool = False) -> Path:
    """Write the run's model as one plain safetensors folder that any Hugging Face tool loads.

    LoRA is merged into the fp32 base it was trained on. A QLoRA adapter is refused unless `dequantize`
    is set (see QLORA_REFUSAL). Full fine-tuning already produced a whole model; it is copied.
    """
    run = open_language_model_run(run_path, "export")
    target = out or run.path / "export" / "merged"
    if run.kind == "qlora" and not dequantize:
        raise HoneError(QLORA_REFUSAL.format(run=run_path))
    dequantized = run.kind == "qlora"
    with staged_folder(target) as staging:
        if run.kind == "full":
            shutil.copytree(run.weights, staging, dirs_exist_ok=True)
        else:
            model = merged_model(run, dequantized)
            model.save_pretrained(staging, safe_serialization=True)
            load_tokenizer(run.weights).save_pretrained(staging)  # with the chat template it was trained on
        record_export(staging, run, "merged", dequantized=dequantized, dtype="float32")
    record_artifact(run, "export_merged", target)
    return target


def to_gguf(
    run_path: Path,
    quant: str = "q8_0",
    out: Path | None = None,
    dequantize: bool = False,
    merged_out: Path | None = None,
) -> GGUFExport:
    """Merge, then convert with llama.cpp's converter; LoRA runs also get the adapter as a LoRA GGUF.

    The Modelfile next to the GGUF lets `ollama create NAME -f Modelfile` serve it with the chat
    template and stop token the model was trained with.
    """
    if quant not in CONVERTER_TYPES and quant not in QUANTIZE_TYPES:
        known = ", ".join([*CONVERTER_TYPES, *QUANTIZE_TYPES])
        raise HoneError(f"--quant {quant!r}: unknown GGUF type; expected one of {known}")
    quantizer = llama_quantize() if quant in QUANTIZE_TYPES else None  # refuse before any work is done
    run = open_language_model_run(run_path, "export")
    merged = merge(run_path, merged_out, dequantize)
    text = modelfile(f"{run.name}-{quant}.gguf", load_tokenizer(merged), run.config.data.system_prompt)
    tools = llama_cpp_tools()
    target = out or run.path / "export" / f"gguf-{quant}"
    skipped = lora_refusal(run)
    files = {
        "model": f"{run.name}-{quant}.gguf",
        "lora": None if skipped else f"{run.name}-lora-{converter_type(quant)}.gguf",
        "modelfile": "Modelfile",
    }
    with staged_folder(target) as staging:
        converted = staging / (f"{run.name}-f16.gguf" if quantizer else files["model"])
        jobs = {"convert_hf_to_gguf.py": model_command(tools, merged, converted, quant, run.name)}
        if files["lora"]:
            jobs["convert_lora_to_gguf.py"] = lora_command(tools, run, staging / files["lora"], quant)
        run_tools(jobs)
        if quantizer is not None:
            quantize(quantizer, converted, staging / files["model"], quant)
        atomic_write_text(staging / files["modelfile"], text)
        details = {"quant": quant, "files": files, "lora_skipped": skipped, "llama_cpp": tools_version(tools)}
        record_export(staging, run, "gguf", dequantized=run.kind == "qlora", **details)
    record_artifact(run, f"export_gguf_{quant}", target)
    return GGUFExport(
        run=run.path,
        folder=target,
        model=target / files["model"],
        merged=merged,
        quant=quant,
        modelfile=target / files["modelfile"],
        lora=target / files["lora"] if files["lora"] else None,
        lora_skipped=skipped,
    )


def converter_type(quant: str) -> str:
    """What the converters write: the type asked for, or the f16 that llama-quantize starts from."""
    return quant if quant in CONVERTER_TYPES else "f16"


def model_command(tools: Path, merged: Path, out_file: Path, quant: str, name: str) -> list[str]:
    """convert_hf_to_gguf.py writes f32/f16/bf16/q8_0 itself; for k-quants it writes the f16 to quantize.
    The run's name becomes the GGUF's general.name, which llama.cpp and Ollama show."""
    options = ["--outtype", converter_type(quant), "--outfile", str(out_file), "--model-name", name]
    return converter(tools / "convert_hf_to_gguf.py", str(merged), *options)


def lora_refusal(run: FinishedRun) -> str | None:
    """Why the run gets no LoRA GGUF (for llama.cpp --lora or Ollama ADAPTER on the base), if it gets none."""
    if run.kind == "full":
        return "full fine-tuning has no adapter"
    if run.kind == "qlora":
        return "the adapter was trained against the NF4 base; on another base it is a different model"
    settings = json.loads((run.weights / "adapter_config.json").read_text(encoding="utf-8"))
    if settings.get("use_dora"):
        return "llama.cpp's LoRA GGUF has no DoRA magnitude vectors"
    if settings.get("use_rslora") or settings.get("rank_pattern") or settings.get("alpha_pattern"):
        return "llama.cpp's LoRA GGUF scales every module by alpha / r; this adapter scales otherwise"
    return None


def lora_command(tools: Path, run: FinishedRun, out_file: Path, quant: str) -> list[str]:
    script = tools / "convert_lora_to_gguf.py"
    options = ["--base", str(run.base), "--outtype", converter_type(quant), "--outfile", str(out_file)]
    return converter(script, *options, str(run.weights))


def converter(script: Path, *arguments: str) -> list[str]:
    if importlib.util.find_spec("sentencepiece") is None:
        raise HoneError("llama.cpp's GGUF converter imports sentencepiece: pip install 'sentencepiece>=0.2'")
    return [sys.executable, str(script), *arguments]


def quantize(quantizer: Path, half: Path, out_file: Path, quant: str) -> None:
    run_tools({"llama-quantize": [str(quantizer), str(half), str(out_file), QUANTIZE_TYPES[quant]]})
    half.unlink()


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
