"""hone.export.llama_cpp on its own: running converter jobs, finding llama-quantize, fetching and unpacking
the converters. Real subprocesses throughout; what cannot run here (pip reaching the package index, a
llama-quantize build) is a small executable script written to tmp_path that records what it was given."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hone.errors import HoneError
from hone.export import llama_cpp

PREFIX = f"llama_cpp_python-{llama_cpp.LLAMA_CPP_PYTHON}/"
VENDOR = PREFIX + "vendor/llama.cpp/"


def script(path: Path, body: str) -> Path:
    """An executable Python script at `path`, run by this interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
    path.chmod(0o755)
    return path


def run_in_thread(jobs: dict[str, list[str]], seconds: float = 120) -> BaseException | None:
    """run_tools in a thread, so a tool that blocks shows up as a failed test rather than a hung one."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            llama_cpp.run_tools(jobs)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"run_tools did not return within {seconds} s"
    return outcome[0]


RENDEZVOUS = """
import json, os, sys, time
from pathlib import Path
me, other, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
environment = {key: os.environ.get(key) for key in ("NO_LOCAL_GGUF", "HF_HUB_OFFLINE", "HONE_TEST_MARK")}
(folder / f"{me}.json").write_text(json.dumps({"argv": sys.argv[1:], "environment": environment}))
print(f"{me} converted every tensor")
for _ in range(600):  # waits for the other job: only jobs that run side by side both finish
    if (folder / f"{other}.json").exists():
        sys.exit(0)
    time.sleep(0.05)
sys.exit(f"{me} never saw {other} running")
"""


def test_jobs_run_side_by_side_offline_and_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    tool = script(tmp_path / "bin" / "convert", RENDEZVOUS)
    monkeypatch.setenv("NO_LOCAL_GGUF", "1")  # would make the converters import another gguf package
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HONE_TEST_MARK", "kept")
    jobs = {
        "convert_hf_to_gguf.py": [str(tool), "model", "lora", str(tmp_path)],
        "convert_lora_to_gguf.py": [str(tool), "lora", "model", str(tmp_path)],
    }

    assert run_in_thread(jobs) is None

    for me, other in (("model", "lora"), ("lora", "model")):
        seen = json.loads((tmp_path / f"{me}.json").read_text())
        assert seen["argv"] == [me, other, str(tmp_path)]
        assert seen["environment"] == {"NO_LOCAL_GGUF": None, "HF_HUB_OFFLINE": "1", "HONE_TEST_MARK": "kept"}
    assert "converted every tensor" not in capfd.readouterr().out, "a tool's output goes to its log"


def test_a_long_output_does_not_block_and_its_end_is_shown(tmp_path: Path) -> None:
    """More output than a pipe holds (64 KiB): the tool still finishes, and the error shows its last lines."""
    lines = 50_000
    body = f"import sys\nfor i in range({lines}):\n    print(f'tensor {{i}} written')\nsys.exit(2)\n"
    tool = script(tmp_path / "chatty", body)

    raised = run_in_thread({"convert_hf_to_gguf.py": [str(tool)]})

    assert isinstance(raised, HoneError)
    expected = "\n  ".join(f"tensor {i} written" for i in range(lines - 15, lines))
    assert str(raised) == f"convert_hf_to_gguf.py failed (exit code 2):\n  {expected}"


def test_every_failed_job_is_reported(tmp_path: Path) -> None:
    fails = script(
        tmp_path / "fails", "import sys\nprint('reading', sys.argv[1], flush=True)\nsys.exit(sys.argv[1])\n"
    )
    passes = script(tmp_path / "passes", "print('fine')\n")
    jobs = {
        "model": [str(fails), "model.safetensors is missing"],
        "ok": [str(passes)],
        "lora": [str(fails), "adapter_config.json is missing"],
    }

    with pytest.raises(HoneError) as raised:
        llama_cpp.run_tools(jobs)

    assert str(raised.value).splitlines() == [
        "model failed (exit code 1):",
        "  reading model.safetensors is missing",
        "  model.safetensors is missing",
        "lora failed (exit code 1):",
        "  reading adapter_config.json is missing",
        "  adapter_config.json is missing",
    ]


@pytest.mark.parametrize(
    ("program", "reason"), [("missing", "No such file or directory"), ("plain", "Permission denied")]
)
def test_a_program_that_cannot_start_is_named_and_started_jobs_are_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, program: str, reason: str
) -> None:
    started: list[subprocess.Popen[Any]] = []

    class Recording(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(llama_cpp.subprocess, "Popen", Recording)
    sleeper = script(tmp_path / "sleeper", "import time\ntime.sleep(120)\n")
    (tmp_path / "plain").write_text("not a program")  # exists, not executable
    jobs = {"convert_hf_to_gguf.py": [str(sleeper)], "convert_lora_to_gguf.py": [str(tmp_path / program)]}

    with pytest.raises(HoneError) as raised:
        llama_cpp.run_tools(jobs)

    assert str(raised.value) == f"convert_lora_to_gguf.py: could not run {tmp_path / program}: {reason}"
    assert len(started) == 1
    assert started[0].wait(timeout=30) == -9, "the job already running is killed, not left behind"


def test_llama_quantize_is_found_on_path_or_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = script(tmp_path / "bin" / "llama-quantize", "")
    chosen = script(tmp_path / "build" / "llama-quantize", "")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("HONE_LLAMA_QUANTIZE", raising=False)
    assert llama_cpp.llama_quantize() == on_path

    monkeypatch.setenv("HONE_LLAMA_QUANTIZE", str(chosen))
    assert llama_cpp.llama_quantize() == chosen, "the environment wins over PATH"

    for wrong in (tmp_path / "build" / "absent", tmp_path / "build"):  # a missing file, a folder
        monkeypatch.setenv("HONE_LLAMA_QUANTIZE", str(wrong))
        with pytest.raises(HoneError, match=rf"HONE_LLAMA_QUANTIZE={re.escape(str(wrong))}: no such program"):
            llama_cpp.llama_quantize()

    monkeypatch.delenv("HONE_LLAMA_QUANTIZE")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(HoneError, match=r"need llama\.cpp's llama-quantize program") as raised:
        llama_cpp.llama_quantize()
    assert "set HONE_LLAMA_QUANTIZE" in str(raised.value)
    assert "f16 and q8_0 need no extra program" in str(raised.value)


def test_a_llama_cpp_checkout_is_used_where_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = tmp_path / "src" / "llama.cpp"
    checkout.mkdir(parents=True)
    (checkout / "convert_hf_to_gguf.py").write_text("# converter\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HONE_LLAMA_CPP", "~/src/llama.cpp")
    monkeypatch.setenv("HONE_HOME", str(tmp_path / "home"))

    assert llama_cpp.llama_cpp_tools() == checkout
    assert llama_cpp.tools_version(checkout) == f"local checkout {checkout}"
    assert not (tmp_path / "home").exists(), "nothing is fetched"


def sdist(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A .tar.gz laid out like llama-cpp-python's source distribution."""
    with tarfile.open(path, "w:gz") as archive:
        folder = tarfile.TarInfo(VENDOR + "gguf-py")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return path


CONVERTERS = {
    VENDOR + "convert_hf_to_gguf.py": b"# hf to gguf\n",
    VENDOR + "convert_lora_to_gguf.py": b"# lora to gguf\n",
    VENDOR + "LICENSE": b"MIT\n",
    VENDOR + "conversion/__init__.py": b"",
    VENDOR + "gguf-py/gguf/__init__.py": b"# gguf\n",
    VENDOR + "gguf-py/gguf/constants.py": b"GGUF_MAGIC = 0x46554747\n",
}
NOT_NEEDED = {
    VENDOR + "src/llama.cpp": b"// C++\n",
    VENDOR + "ggml/src/ggml.c": b"/* C */\n",
    PREFIX + "setup.py": b"# the Python binding's build\n",
    VENDOR + "gguf-py/../../../escaped.py": b"# outside the tools folder\n",
}

FAKE_PIP = """
import json, shutil, sys
from pathlib import Path
log, archive, code = Path(sys.argv[0]).with_suffix(".log"), "{archive}", {code}
with log.open("a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
arguments = sys.argv[1:]
folder = Path(arguments[arguments.index("-d") + 1])
(folder / "requirement-seen.txt").write_text(Path(arguments[arguments.index("-r") + 1]).read_text())
if archive:
    shutil.copy(archive, folder / Path(archive).name)
for line in range(12):
    print(f"pip line {{line}}", file=sys.stderr)
sys.exit(code)
"""


def fake_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive: Path | None, code: int = 0) -> Path:
    """Stands in for `python -m pip download` (the package index is out of reach here)."""
    python = script(tmp_path / "pip" / "python", FAKE_PIP.format(archive=archive or "", code=code))
    monkeypatch.setattr(llama_cpp, "sys", SimpleNamespace(executable=str(python)))
    monkeypatch.setenv("HONE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HONE_LLAMA_CPP", raising=False)
    return python.with_suffix(".log")


def test_the_converters_are_fetched_once_and_only_they_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = sdist(
        tmp_path / f"llama_cpp_python-{llama_cpp.LLAMA_CPP_PYTHON}.tar.gz",
        {**CONVERTERS, **NOT_NEEDED},
        links={VENDOR + "gguf-py/gguf/linked.py": "/etc/passwd"},
    )
    log = fake_pip(tmp_path, monkeypatch, archive)

    tools = llama_cpp.llama_cpp_tools()

    assert tools == tmp_path / "home" / "tools" / f"llama.cpp-{llama_cpp.LLAMA_CPP_PYTHON}"
    kept = sorted(str(p.relative_to(tools)) for p in tools.rglob("*") if p.is_file())
    assert kept == sorted([name.removeprefix(VENDOR) for name in CONVERTERS] + [llama_cpp.TOOL_RECORD])
    for name, data in CONVERTERS.items():
        assert (tools / name.removeprefix(VENDOR)).read_bytes() == data
    assert not list(tmp_path.rglob("escaped.py")), "no member lands outside the tools folder"
    record = json.loads((tools / llama_cpp.TOOL_RECORD).read_text())
    assert record == {
        "package": "llama-cpp-python",
        "version": llama_cpp.LLAMA_CPP_PYTHON,
        "sha256": llama_cpp.LLAMA_CPP_PYTHON_SHA256,
    }
    assert llama_cpp.tools_version(tools) == llama_cpp.LLAMA_CPP_PYTHON
    [arguments] = [json.loads(line) for line in log.read_text().splitlines()]
    assert arguments[:5] == ["-m", "pip", "download", "--no-deps", "--no-binary"]
    assert arguments[5] == ":all:" and "--require-hashes" in arguments and arguments[-1] == "--quiet"
    assert [p.name for p in (tmp_path / "home" / "tools").iterdir()] == [tools.name], "no staging left"

    assert llama_cpp.llama_cpp_tools() == tools
    assert len(log.read_text().splitlines()) == 1, "fetched once, reused after (offline too)"


def test_pip_is_given_the_pinned_version_and_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = fake_pip(tmp_path, monkeypatch, sdist(tmp_path / "llama_cpp_python-x.tar.gz", CONVERTERS))
    folder = tmp_path / "download"

    found = llama_cpp.download_sdist(folder)

    assert found == folder / "llama_cpp_python-x.tar.gz"
    pin = (folder / "requirement-seen.txt").read_text()
    assert pin == (
        f"llama-cpp-python=={llama_cpp.LLAMA_CPP_PYTHON} --hash=sha256:{llama_cpp.LLAMA_CPP_PYTHON_SHA256}\n"
    )
    [arguments] = [json.loads(line) for line in log.read_text().splitlines()]
    assert arguments[arguments.index("-d") + 1] == str(folder)


@pytest.mark.parametrize("code", [1, 0], ids=["pip fails", "pip leaves no file"])
def test_a_failed_fetch_shows_pip_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """pip failing, or succeeding without the file: either way the error says how to get the converters."""
    fake_pip(tmp_path, monkeypatch, None, code)

    with pytest.raises(HoneError) as raised:
        llama_cpp.llama_cpp_tools()

    message = str(raised.value)
    assert message.startswith("could not fetch llama.cpp's GGUF converters (the llama-cpp-python==0.3.36")
    assert "set HONE_LLAMA_CPP to a llama.cpp checkout" in message
    assert message.endswith("pip: " + "\n  ".join(f"pip line {line}" for line in range(4, 12)))
    assert list((tmp_path / "home" / "tools").iterdir()) == [], "no half-fetched tools folder"


def test_an_archive_without_the_converters_is_refused(tmp_path: Path) -> None:
    partial = {
        name: data for name, data in CONVERTERS.items() if "gguf-py" not in name and "conversion" not in name
    }
    archive = sdist(tmp_path / "llama_cpp_python-0.3.36.tar.gz", {**partial, **NOT_NEEDED})
    folder = tmp_path / "tools"
    folder.mkdir()

    with pytest.raises(HoneError) as raised:
        llama_cpp.extract_converters(archive, folder)

    assert (
        str(raised.value)
        == "llama_cpp_python-0.3.36.tar.gz: the source distribution has no conversion, gguf-py"
    )


def test_tools_version_of_a_folder_without_a_record(tmp_path: Path) -> None:
    assert llama_cpp.tools_version(tmp_path) == f"local checkout {tmp_path}"
    (tmp_path / llama_cpp.TOOL_RECORD).write_text(json.dumps({"version": "9.9.9"}))
    assert llama_cpp.tools_version(tmp_path) == "9.9.9"
