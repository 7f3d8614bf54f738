"""What machine this is: the CPU's name and native bf16 support, the GPU, the run manifest's hardware record.

Detection only, with no training or evaluation policy: it sits below every stage, so the run folder, model
loading and evaluation can ask what the machine offers without importing the trainer. The choices made
from it (precision, attention, checkpointing) live with the stage that makes them (`hone.train.hardware`).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch


def cpu_name() -> str:
    """The CPU's model name as the OS reports it (for benchmark records)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_bf16_native() -> str | None:
    """The CPU's native bf16 instructions (AMX tiles or AVX512-BF16), or None when bf16 is emulated.

    With AMX or AVX512-BF16 oneDNN runs bf16 matmuls faster than fp32; without them bf16 is emulated and
    much slower than fp32 (benchmarks/RESULTS.md has the figures). torch has no public query for these
    two instruction sets, so its `torch.cpu` helpers are read here, in this one place.
    """
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX512-BF16"
    return None


def machine() -> dict[str, Any]:
    """The machine a run ran on: enough to compare its speed with another run's."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cpu_bf16": cpu_bf16_native(),  # AMX, AVX512-BF16 or None (bf16 emulated): decides CPU precision
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info
