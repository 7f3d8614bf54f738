"""python benchmarks/model_resolve.py [--reference smollm2-135m-instruct] [--calls 1000]

What a model reference costs to resolve, in a fresh, empty HONE_HOME, side by side:
  first call    the baseline, what every call would cost without the cache: the shipped GGUF converted
                into a safetensors checkpoint (dequantised, saved with its tokenizer)
  cached call   every later call: the conversion record is found and the folder returned
Prints the time of the first call, the median of --calls cached calls, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hone.models.resolve import CONVERSION_RECORD, folder_size, resolve_model


@contextmanager
def hone_home(folder: Path) -> Iterator[None]:
    saved = os.environ.get("HONE_HOME")
    os.environ["HONE_HOME"] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["HONE_HOME"]
        else:
            os.environ["HONE_HOME"] = saved


def record_time(path: Path) -> int | None:
    """When the conversion record was written; None for a folder that was never converted."""
    record = path / CONVERSION_RECORD
    return record.stat().st_mtime_ns if record.is_file() else None


def run(reference: str, calls: int, home: Path) -> dict[str, Any]:
    """Resolve `reference` once into an empty `home` (converting), then `calls` times from the cache."""
    with hone_home(home):
        began = time.perf_counter()
        path = resolve_model(reference)
        first = time.perf_counter() - began
        converted_at = record_time(path)
        cached = []
        for _ in range(calls):
            began = time.perf_counter()
            again = resolve_model(reference)
            cached.append(time.perf_counter() - began)
            if again != path:
                raise RuntimeError(f"{reference} resolved to {again}, then to {path}")
    median = statistics.median(cached)
    return {
        "path": str(path),
        "bytes": folder_size(path),
        "converted": converted_at is not None,
        "reconverted": record_time(path) != converted_at,
        "first_seconds": first,
        "cached_seconds": cached,
        "cached_median_seconds": median,
        "ratio": first / median,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference", default="smollm2-135m-instruct", help="an alias, a .gguf file or a model folder"
    )
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = run(args.reference, args.calls, Path(folder))
    size = result["bytes"] / 2**20
    print(f"resolve_model({args.reference!r}) in an empty HONE_HOME: {result['path']} ({size:.0f} MiB)")
    print("| call | time |\n|---|---:|")
    first = "first (converts)" if result["converted"] else "first (a local folder: no conversion)"
    print(f"| {first} | {result['first_seconds']:.2f} s |")
    print(f"| cached (median of {args.calls}) | {result['cached_median_seconds'] * 1e6:.0f} us |")
    print(f"first / cached: {result['ratio']:,.0f}x; converted again: {result['reconverted']}")
    return result


if __name__ == "__main__":
    main()
