"""A trained model as it was trained, ready for generation: what evaluation and export load.

LoRA adapters are merged into their base (generation without the adapter's extra matmuls is faster);
a QLoRA adapter is merged into the base as training saw it, NF4-quantized and dequantized, since
merging into the original weights would give a different model from the one that was trained.

This layer knows weights, not run folders: the caller (`hone.runs.FinishedRun`) says where the base and
the trained weights are and at which precision they were trained.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from hone.errors import HoneError
from hone.models.quantization import quantization_config
from hone.models.resolve import load_model, load_tokenizer, require_all_weights, torch_dtype, weights_policy

if TYPE_CHECKING:
    from hone.config import ModelConfig


class TrainedWeights(Protocol):
    """Where a trained model's pieces are: its base folder, its adapter/ or model/ folder, and how."""

    @property
    def base(self) -> Path: ...

    @property
    def weights(self) -> Path: ...

    @property
    def kind(self) -> str: ...  # lora, qlora or full

    @property
    def training_precision(self) -> str: ...  # fp32, bf16 or fp16


# Bytes per element of the safetensors dtypes whose size is whole bytes; others are checked by offsets only.
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
WEIGHT_FILES = ("adapter_model.bin", "pytorch_model.bin")  # pickles: present, but not checkable cheaply


def check_weights(folder: Path) -> None:
    """Refuse a model or adapter folder that would fail to load, from its headers alone (no tensor read).

    A candidate that fails only when its turn comes has already cost every rung before it; this reads a
    few kilobytes per file, so callers run it on every model up front.
    """
    if not folder.is_dir():
        raise HoneError(f"{folder}: the weights folder is missing")
    for file in sorted(folder.glob("*.json")):
        read_json_object(file)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise HoneError(f"{index}: no weight_map; not a safetensors index")
        for shard in sorted(set(map(str, weight_map.values()))):
            if not (folder / shard).is_file():
                raise HoneError(f"{folder / shard}: missing (listed in {index.name})")
    tensors = sorted(folder.glob("*.safetensors"))
    if not tensors and not any((folder / name).is_file() for name in WEIGHT_FILES):
        expected = "adapter_model" if (folder / "adapter_config.json").is_file() else "model"
        raise HoneError(f"{folder}: no weights file (expected {expected}.safetensors)")
    for file in tensors:
        check_safetensors(file)


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise HoneError(f"{path}: unreadable ({exc})") from None
    except json.JSONDecodeError as exc:
        raise HoneError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); truncated?") from None
    if not isinstance(value, dict):
        raise HoneError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def check_safetensors(path: Path) -> None:
    """The file's header parses and describes exactly the bytes the file holds, tensor by tensor."""
    size = path.stat().st_size
    try:
        with path.open("rb") as stream:
            prefix = stream.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            header = json.loads(stream.read(length)) if 0 < length <= size - 8 else None
    except OSError as exc:
        raise HoneError(f"{path}: unreadable ({exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise HoneError(f"{path}: not a readable safetensors file ({size} bytes; truncated or corrupt)")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(offset) for offset in entry["data_offsets"])
            count = math.prod(int(n) for n in entry["shape"])
            dtype = str(entry["dtype"])
        except (KeyError, TypeError, ValueError):
            raise HoneError(f"{path}: tensor {name!r} has no valid dtype, shape and data_offsets") from None
        element = SAFETENSORS_DTYPE_BYTES.get(dtype)
        if not 0 <= begin <= stop or (element is not None and stop - begin != count * element):
            raise HoneError(f"{path}: tensor {name!r} ({dtype} {entry['shape']}) has wrong data_offsets")
        end = max(end, stop)
    expected = 8 + length + end
    if size != expected:
        raise HoneError(
            f"{path}: truncated or corrupt: its header describes {expected} bytes, the file has {size}"
        )


def trained_model(
    trained: TrainedWeights,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    opt_in: ModelConfig | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained language model on `device`, in `dtype` (adapters are merged in
    fp32 on the CPU first, so the merged weights are rounded once). `opt_in` is the config's model
    section: what it allows to load (see hone.models.resolve.weights_policy)."""
    tokenizer = load_tokenizer(trained.weights, opt_in)
    if trained.kind == "full":
        return load_model(trained.weights, dtype=dtype, device=device, opt_in=opt_in), tokenizer
    merged = merged_model(trained, dequantized=trained.kind == "qlora", opt_in=opt_in)
    return merged.to(device=device, dtype=dtype), tokenizer


def merged_model(trained: TrainedWeights, dequantized: bool, opt_in: ModelConfig | None = None) -> Any:
    from peft import PeftModel

    weights_policy(trained.weights, opt_in)  # PEFT takes no such options for an adapter: the check counts
    base = dequantized_base(trained, opt_in) if dequantized else load_model(trained.base, opt_in=opt_in)
    return PeftModel.from_pretrained(base, trained.weights).merge_and_unload()


def dequantized_base(trained: TrainedWeights, opt_in: ModelConfig | None = None) -> Any:
    """The base exactly as QLoRA training saw it: NF4-quantized at the training dtype, then dequantized.

    Loading at the training dtype matters: on a GPU the weights are cast to bf16 before quantization and
    the unquantized ones (embeddings, norms) keep bf16 values, so the fp32 result carries the same
    rounding the adapter was trained against.
    """
    from transformers import AutoModelForCausalLM

    dtype = torch_dtype(trained.training_precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    quantized, loading = AutoModelForCausalLM.from_pretrained(
        trained.base,
        quantization_config=quantization_config(dtype),
        dtype=dtype,
        device_map=device,
        output_loading_info=True,
        **weights_policy(trained.base, opt_in),
    )
    require_all_weights(trained.base, loading)  # an incomplete base would be filled with random values
    return quantized.dequantize(dtype=torch.float32).to(device="cpu", dtype=torch.float32)
