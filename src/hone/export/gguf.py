"""GGUF for llama.cpp and Ollama, written by llama.cpp's own converters, with a Modelfile beside it."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from hone.errors import HoneError
from hone.export.llama_cpp import llama_cpp_tools, llama_quantize, run_tools, tools_version
from hone.export.merge import merge, record_artifact, record_export
from hone.export.ollama import modelfile, run_system_prompt
from hone.io import atomic_write_text, staged_folder
from hone.models.resolve import load_tokenizer
from hone.runs import FinishedRun, open_language_model_run

CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")  # written by convert_hf_to_gguf.py itself
QUANTIZE_TYPES = {"q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K"}  # need llama-quantize
EXACT_TYPES = ("f32", "f16")  # greedy outputs are expected to match the merged model exactly


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
    system_warning: str | None = None  # what callers of the Ollama model must know about its system prompt


def to_gguf(
    run_path: Path,
    quant: str = "q8_0",
    out: Path | None = None,
    dequantize: bool = False,
    merged_out: Path | None = None,
    record: bool = True,
) -> GGUFExport:
    """Merge, then convert with llama.cpp's converter; LoRA runs also get the adapter as a LoRA GGUF.

    The Modelfile next to the GGUF lets `ollama create NAME -f Modelfile` serve it with the chat
    template, stop token and system prompt the model was trained with.
    """
    if quant not in CONVERTER_TYPES and quant not in QUANTIZE_TYPES:
        known = ", ".join([*CONVERTER_TYPES, *QUANTIZE_TYPES])
        raise HoneError(f"--quant {quant!r}: unknown GGUF type; expected one of {known}")
    quantizer = llama_quantize() if quant in QUANTIZE_TYPES else None  # refuse before any work is done
    run = open_language_model_run(run_path, "export")
    system = run_system_prompt(run)
    merged = merge(run_path, merged_out, dequantize, record)
    text = modelfile(f"{run.name}-{quant}.gguf", load_tokenizer(merged, run.config.model), system)
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
        details["system_prompt"] = {"text": system.text, "source": system.source, "warning": system.warning}
        record_export(staging, run, "gguf", dequantized=run.kind == "qlora", **details)
    if record:  # see merge
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
        system_warning=system.warning,
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
