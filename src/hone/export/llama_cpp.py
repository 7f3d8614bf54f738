"""llama.cpp's own GGUF converters, fetched once, and the programs that run them.

The converters come from the llama-cpp-python source distribution: the one package on PyPI that ships
llama.cpp's `convert_hf_to_gguf.py`, `convert_lora_to_gguf.py` and the gguf-py they import, in versions
that match each other. hone fetches it with pip on the first GGUF export, keeps 2 MB of it, and reuses
that from then on, offline too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import ExitStack
from pathlib import Path

from hone.errors import HoneError
from hone.io import atomic_write_json, staged_folder
from hone.models.resolve import hone_home

logger = logging.getLogger(__name__)

TOOL_RECORD = "hone-tool.json"
# llama.cpp's converters come from the llama-cpp-python source distribution, fetched with pip into
# $HONE_HOME/tools/ on the first GGUF export and reused from then on (offline too). Not at install time:
# the sdist is 75 MB, for 2 MB of Python that most users never need. The version is pinned and the file's
# sha256 checked, so every hone of this version writes the same GGUF; the sdist's own gguf-py (0.19.0
# here) is what the converters import, so they never meet a gguf package of another version.
# HONE_LLAMA_CPP can point at a llama.cpp checkout instead, for machines with no package index.
LLAMA_CPP_PYTHON = "0.3.36"
LLAMA_CPP_PYTHON_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
CONVERTER_PATHS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "LICENSE", "conversion", "gguf-py")


def run_tools(jobs: dict[str, list[str]]) -> None:
    """Run the commands side by side (a converter spends most of its time importing torch), with the
    bundled gguf-py and no network; a failure shows the end of its output."""
    environment = {key: value for key, value in os.environ.items() if key != "NO_LOCAL_GGUF"}
    environment["HF_HUB_OFFLINE"] = "1"  # every input is a local folder
    failures = []
    with ExitStack() as stack:
        running = []
        for name, command in jobs.items():
            log = stack.enter_context(tempfile.TemporaryFile())  # not a pipe: a line per tensor fills one
            try:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
            except OSError as exc:
                raise HoneError(f"{name}: could not run {command[0]}: {exc.strerror}") from None
            stack.callback(process.kill)  # on an error above; a no-op for a finished process
            running.append((name, process, log))
        for name, process, log in running:
            code = process.wait()
            log.seek(0)
            output = log.read().decode(errors="replace").strip()
            logger.debug("%s: %s", name, output[-2000:])
            if code != 0:
                tail = "\n  ".join(output.splitlines()[-15:])
                failures.append(f"{name} failed (exit code {code}):\n  {tail}")
    if failures:
        raise HoneError("\n".join(failures))


def llama_quantize() -> Path:
    override = os.environ.get("HONE_LLAMA_QUANTIZE")
    if override and not Path(override).expanduser().is_file():
        raise HoneError(
            f"HONE_LLAMA_QUANTIZE={override}: no such program; point it at llama.cpp's llama-quantize"
        )
    found = str(Path(override).expanduser()) if override else shutil.which("llama-quantize")
    if not found:
        raise HoneError(
            "k-quant GGUF types (q4_k_m, q5_k_m, q6_k) need llama.cpp's llama-quantize program, and it is "
            "not on PATH. Install llama.cpp (`brew install llama.cpp`, or build it: `cmake -B build && "
            "cmake --build build --target llama-quantize`), then put llama-quantize on PATH or set "
            "HONE_LLAMA_QUANTIZE to it. f16 and q8_0 need no extra program."
        )
    return Path(found)


def llama_cpp_tools() -> Path:
    """The folder holding llama.cpp's converters: HONE_LLAMA_CPP, else hone's copy (fetched once)."""
    override = os.environ.get("HONE_LLAMA_CPP")
    if override:
        folder = Path(override).expanduser()
        if not (folder / "convert_hf_to_gguf.py").is_file():
            raise HoneError(f"HONE_LLAMA_CPP={override}: no convert_hf_to_gguf.py there; expected llama.cpp")
        return folder
    folder = hone_home() / "tools" / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if (folder / TOOL_RECORD).is_file():
        return folder
    with staged_folder(folder) as staging:
        sdist = download_sdist(staging / ".download")
        extract_converters(sdist, staging)
        shutil.rmtree(staging / ".download")
        record = {
            "package": "llama-cpp-python",
            "version": LLAMA_CPP_PYTHON,
            "sha256": LLAMA_CPP_PYTHON_SHA256,
        }
        atomic_write_json(staging / TOOL_RECORD, record)
    return folder


def download_sdist(folder: Path) -> Path:
    """pip fetches the pinned sdist through the user's own index settings and checks its sha256."""
    folder.mkdir(parents=True)
    requirement = folder / "requirement.txt"
    pin = f"llama-cpp-python=={LLAMA_CPP_PYTHON} --hash=sha256:{LLAMA_CPP_PYTHON_SHA256}\n"
    requirement.write_text(pin, encoding="utf-8")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += ["--require-hashes", "-r", str(requirement), "-d", str(folder), "--quiet"]
    logger.info("fetching llama.cpp's GGUF converters (llama-cpp-python %s sdist, once)", LLAMA_CPP_PYTHON)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(folder.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        tail = "\n  ".join(done.stderr.strip().splitlines()[-8:])
        raise HoneError(
            f"could not fetch llama.cpp's GGUF converters (the llama-cpp-python=={LLAMA_CPP_PYTHON} "
            f"source distribution) from the package index; hone needs it once, then works offline. "
            f"Connect to the index and retry, or set HONE_LLAMA_CPP to a llama.cpp checkout.\n  pip: {tail}"
        )
    return found[0]


def extract_converters(sdist: Path, folder: Path) -> None:
    """Only the converters, the conversion package and gguf-py; the C++ sources are not needed."""
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive:
            relative = member.name[len(prefix) :] if member.name.startswith(prefix) else ""
            parts = Path(relative).parts
            if not member.isfile() or not parts or parts[0] not in CONVERTER_PATHS or ".." in parts:
                continue
            destination = folder.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None  # a regular file always has contents
            destination.write_bytes(source.read())
    missing = [name for name in CONVERTER_PATHS if not (folder / name).exists()]
    if missing:
        raise HoneError(f"{sdist.name}: the source distribution has no {', '.join(missing)}")


def tools_version(tools: Path) -> str:
    record = tools / TOOL_RECORD
    if record.is_file():
        return str(json.loads(record.read_text(encoding="utf-8"))["version"])
    return f"local checkout {tools}"
