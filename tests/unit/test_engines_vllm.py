"""vLLM's launcher: the `vllm serve` command line, and the process started, waited for and stopped for real
(a stand-in `vllm` command on PATH speaks vLLM's HTTP API over 127.0.0.1; vLLM has no CPU build)."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hone.config import VllmSettings
from hone.engines.vllm import (
    BASE_NAME,
    VllmError,
    VllmServer,
    adapter_name,
    adapter_rank,
    vllm_command,
    vllm_executable,
    vllm_lora_rank,
)
from hone.errors import HoneError
from hone.io import alive
from vllm_standin import install, starts


def test_command_serves_the_base_with_lora_enabled_and_every_setting() -> None:
    settings = VllmSettings(
        tensor_parallel_size=4,
        gpu_memory_utilization=0.85,
        max_model_len=4096,
        dtype="bfloat16",
        extra_args=["--enforce-eager", "--max-num-seqs", "64"],
    )
    adapters = {"lora-a": Path("/runs/a/adapter"), "lora-b": Path("/runs/b/adapter")}
    command = vllm_command("/models/base", adapters, settings, 8123, max_loras=2, max_lora_rank=16)
    assert command == [
        "vllm", "serve", "/models/base", "--host", "127.0.0.1", "--port", "8123",
        "--served-model-name", BASE_NAME,
        "--enable-lora", "--max-loras", "2", "--max-lora-rank", "16",
        "--lora-modules", "lora-a=/runs/a/adapter", "lora-b=/runs/b/adapter",
        "--tensor-parallel-size", "4", "--gpu-memory-utilization", "0.85",
        "--max-model-len", "4096", "--dtype", "bfloat16",
        "--enforce-eager", "--max-num-seqs", "64",
    ]  # fmt: skip


def test_command_defaults_leave_vllm_its_own_length_and_dtype() -> None:
    command = vllm_command("base-folder", {}, VllmSettings(), 9000, max_loras=8, max_lora_rank=64)
    assert "--lora-modules" not in command and "--max-model-len" not in command and "--dtype" not in command
    assert command[command.index("--tensor-parallel-size") + 1] == "1"
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.9"
    assert command[-2:] == ["--gpu-memory-utilization", "0.9"]


def test_lora_ranks_round_up_to_what_vllm_accepts(tmp_path: Path) -> None:
    assert [vllm_lora_rank(rank) for rank in (1, 4, 8, 9, 64, 65, 300, 512)] == [
        1,
        8,
        8,
        16,
        64,
        128,
        320,
        512,
    ]
    with pytest.raises(HoneError, match=r"serve.max_lora_rank: LoRA rank 600 .*\(512\)"):
        vllm_lora_rank(600, "serve.max_lora_rank")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "rank_pattern": {"q_proj": 12}}))
    assert adapter_rank(tmp_path) == 12
    (tmp_path / "adapter_config.json").write_text("{")
    with pytest.raises(HoneError, match=r"adapter_config\.json: not a readable LoRA adapter config"):
        adapter_rank(tmp_path)


def test_adapter_names_are_stable_and_plain() -> None:
    name = adapter_name("support/3")
    assert name == adapter_name("support/3") != adapter_name("support/4")
    assert name.startswith("lora-") and name.replace("-", "").isalnum()


def test_a_missing_vllm_command_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(HoneError, match=r"`vllm` command, which is not installed here: pip install vllm"):
        vllm_executable()
    server = VllmServer("base", VllmSettings(), tmp_path / "vllm.log")
    with pytest.raises(HoneError, match="pip install vllm"):
        server.start()
    assert not (tmp_path / "vllm.log").exists()


def test_the_process_starts_loads_adapters_at_runtime_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_adapter: Path
) -> None:
    record = install(tmp_path / "bin", monkeypatch)
    log = tmp_path / "logs" / "vllm.log"
    with VllmServer("my-base", VllmSettings(), log, {"first": tiny_adapter}, max_loras=2) as server:
        [start] = starts(record)
        assert start["argv"][:2] == ["serve", "my-base"] and start["runtime_lora"] == "True"
        assert f"first={tiny_adapter}" in start["argv"] and server.url.endswith(start["argv"][5])
        assert server.healthy() and alive(start["pid"])
        server.load_adapter("second", tiny_adapter)
        server.load_adapter("second", tiny_adapter)  # once is enough: the second call sends nothing
        loaded = json.loads(server.request("/stats"))["loras"]
        assert loaded == {"first": str(tiny_adapter), "second": str(tiny_adapter)}
        with pytest.raises(
            VllmError, match="answered 400 to /v1/load_lora_adapter: No adapter found"
        ) as error:
            server.load_adapter("third", tmp_path)
        assert error.value.status == 400
        url = server.url
    assert not server.healthy() and wait_dead(start["pid"])
    assert log.read_text().startswith("$ ") and "stand-in vLLM serving on" in log.read_text()
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/health", timeout=2)


def test_a_process_that_dies_at_start_fails_naming_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path / "bin", monkeypatch, mode="die")
    log = tmp_path / "vllm.log"
    server = VllmServer("base", VllmSettings(), log, setting="serve.vllm")
    with pytest.raises(HoneError) as error:
        server.start()
    message = str(error.value)
    assert f"vLLM exited with code 3 before it was ready; the end of its log {log}" in message
    assert "stand-in vLLM found no CUDA device" in message
    assert server.process is None


def test_a_process_never_ready_is_stopped_after_startup_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = install(tmp_path / "bin", monkeypatch, mode="hang")
    server = VllmServer(
        "base", VllmSettings(startup_seconds=1.5), tmp_path / "vllm.log", setting="evaluate.vllm"
    )
    began = time.monotonic()
    with pytest.raises(HoneError, match=r"not ready after 1.5 s \(evaluate.vllm.startup_seconds\)") as error:
        server.start()
    assert time.monotonic() - began < 30
    assert "stand-in vLLM loading base" in str(error.value)
    [start] = starts(record)
    assert wait_dead(start["pid"])


def wait_dead(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def tiny_adapter(tmp_path: Path) -> Path:
    """A folder that looks like a PEFT adapter to the stand-in (its config is all it reads)."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4}))
    return folder


def test_the_stand_in_is_on_path_only_where_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path / "bin", monkeypatch)
    assert vllm_executable() == str(tmp_path / "bin" / "vllm")
    assert os.access(vllm_executable(), os.X_OK)
