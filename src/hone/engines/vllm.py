"""vLLM's OpenAI server as a child process: its command line, its start, its adapters and its stop.

hone runs the `vllm serve` command rather than importing vLLM: vLLM has no CPU build, brings its own
CUDA worker processes and takes most of the GPU's memory, and a crash of it must end in a clear error, not
in hone's own process. The server listens on 127.0.0.1 only. Adapters named when it starts are passed as
`--lora-modules`; one asked for later is loaded at runtime through `POST /v1/load_lora_adapter`, which vLLM
offers only when VLLM_ALLOW_RUNTIME_LORA_UPDATING is set in its environment.

What hone relies on of vLLM's server (vLLM >= 0.10.2): `GET /health` answers 200 once the model is
loaded; `POST /v1/completions` takes the prompt as token ids (hone renders chat templates itself, so
every engine sees the same tokens), a LoRA adapter's name or the base's served name as `model`,
`structured_outputs: {"json": schema}` (the `guided_json` field it replaced was removed in 0.12) and
`stream_options.include_usage`, and streams server-sent events ending in `data: [DONE]`. A version that
knows `return_token_ids` also sends each piece's token ids; an older one ignores the field, and the usage
counts stand in for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from hone.config import VllmSettings
from hone.errors import HoneError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
BASE_NAME = "base"  # the base model's --served-model-name: what a request for no adapter names
INSTALL_HINT = "pip install vllm (or pip install 'hone[vllm]') on a machine with a CUDA GPU"
# --max-lora-rank accepts only these (vLLM's MaxLoRARanks); a smaller rank is served in a larger slot
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
LOG_TAIL_LINES = 20
POLL_SECONDS = 0.5
STOP_SECONDS = 30.0
# a socket read that waits this long means vLLM is stuck: the request fails rather than hangs
REQUEST_TIMEOUT_SECONDS = 600.0


class VllmError(HoneError):
    """vLLM refused a request (`status` is its HTTP status) or did not answer (`status` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def vllm_executable() -> str:
    """The `vllm` command: on PATH, or beside this Python (a virtualenv used without activating it)."""
    found = shutil.which("vllm")
    if found:
        return found
    beside = Path(sys.executable).parent / "vllm"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise HoneError(
        f"the vllm engine needs vLLM's `vllm` command, which is not installed here: {INSTALL_HINT}"
    )


def vllm_lora_rank(rank: int, setting: str = "max_lora_rank") -> int:
    """The smallest rank vLLM's --max-lora-rank accepts that holds adapters of `rank`."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise HoneError(f"{setting}: LoRA rank {rank} is above the largest vLLM serves ({LORA_RANKS[-1]})")


def adapter_rank(folder: Path) -> int:
    """The largest LoRA rank in a PEFT adapter folder (its `r`, or a larger one in `rank_pattern`)."""
    path = folder / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        ranks = [int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HoneError(f"{path}: not a readable LoRA adapter config ({exc})") from None
    return max(ranks)


def adapter_name(key: str) -> str:
    """vLLM's name for an adapter: stable for one key (a registered version, a run folder) across starts,
    and free of the characters a key may hold."""
    return "lora-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def vllm_command(
    model: str | Path,
    adapters: dict[str, Path],
    settings: VllmSettings,
    port: int,
    max_loras: int,
    max_lora_rank: int,
    served_name: str = BASE_NAME,
) -> list[str]:
    """`vllm serve` for one base model with LoRA enabled and `adapters` (name -> folder) loaded at start."""
    command = ["vllm", "serve", str(model), "--host", HOST, "--port", str(port)]
    command += ["--served-model-name", served_name]
    command += ["--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(max_lora_rank)]
    if adapters:
        command += ["--lora-modules", *(f"{name}={folder}" for name, folder in adapters.items())]
    command += ["--tensor-parallel-size", str(settings.tensor_parallel_size)]
    command += ["--gpu-memory-utilization", f"{settings.gpu_memory_utilization:g}"]
    if settings.max_model_len is not None:
        command += ["--max-model-len", str(settings.max_model_len)]
    if settings.dtype != "auto":
        command += ["--dtype", settings.dtype]
    return [*command, *settings.extra_args]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log written)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) if tail else "(the log is empty)"


def error_message(raw: bytes) -> str:
    """The message of a vLLM error body: {"error": {"message"}} now, {"object": "error", "message"} before."""
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("message"):
            return str(body["message"])
    return text[:500]


class VllmServer:
    """One `vllm serve` process over a base model, on a free 127.0.0.1 port, its output in `log_file`.

    `start` returns once `/health` answers and fails with the log's last lines if vLLM exits or is not
    ready within `settings.startup_seconds`; `stop` (also on leaving a `with` block) sends SIGTERM to its
    process group, then SIGKILL, so vLLM's worker processes and their GPU memory go with it.
    """

    def __init__(
        self,
        model: str | Path,
        settings: VllmSettings,
        log_file: Path,
        adapters: dict[str, Path] | None = None,
        max_loras: int = 1,
        max_lora_rank: int = 16,
        setting: str = "vllm",
    ) -> None:
        self.model = model
        self.settings = settings
        self.log_file = log_file
        self.adapters = dict(adapters or {})
        self.max_loras = max_loras
        self.max_lora_rank = max_lora_rank
        self.setting = setting  # where the settings live (serve.vllm, evaluate.vllm), for error messages
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.loaded: set[str] = set()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # Lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        executable = vllm_executable()
        self.port = free_port()
        command = vllm_command(
            self.model, self.adapters, self.settings, self.port, self.max_loras, self.max_lora_rank
        )
        command[0] = executable
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        logger.info("starting vLLM (log %s): %s", self.log_file, shlex.join(command))
        with self.log_file.open("wb") as log:
            log.write(f"$ {shlex.join(command)}\n".encode())
            log.flush()
            try:  # a session of its own: stop() signals the whole group, vLLM's worker processes included
                self.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    start_new_session=True,
                )
            except OSError as exc:
                raise HoneError(f"cannot start {executable}: {exc}") from None
        try:
            self.wait_until_ready()
        except BaseException:  # a failed or interrupted start leaves no vLLM behind
            self.stop()
            raise
        self.loaded = set(self.adapters)

    def wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.settings.startup_seconds
        while True:
            code = self.process.poll()
            if code is not None:
                raise HoneError(
                    f"vLLM exited with code {code} before it was ready; the end of its log {self.log_file}:\n"
                    + log_tail(self.log_file)
                )
            if self.healthy():
                logger.info("vLLM ready on %s", self.url)
                return
            if time.monotonic() >= deadline:
                raise HoneError(
                    f"vLLM was not ready after {self.settings.startup_seconds:g} s "
                    f"({self.setting}.startup_seconds); the end of its log {self.log_file}:\n"
                    + log_tail(self.log_file)
                )
            time.sleep(POLL_SECONDS)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("vLLM did not stop within %g s of SIGTERM: killing it", timeout)
                process.kill()
                process.wait()
        signal_group(process.pid, signal.SIGKILL)  # any worker its exit left behind
        self.loaded = set()
        logger.info("vLLM stopped (exit code %s)", process.returncode)

    def exit_note(self) -> str:
        process = self.process
        if process is None:
            return " (vLLM is not running)"
        code = process.poll()
        return f" (vLLM exited with code {code}; see {self.log_file})" if code is not None else ""

    # Adapters ------------------------------------------------------------------------------------------

    def load_adapter(self, name: str, folder: Path) -> None:
        """Make an adapter servable under `name`, loading it at runtime the first time it is asked for."""
        with self.lock:
            if name in self.loaded:
                return
            self.request("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
            self.loaded.add(name)
            logger.info("vLLM loaded adapter %s from %s", name, folder)

    # HTTP ----------------------------------------------------------------------------------------------

    def open(self, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data, {"Content-Type": "application/json"}, method="POST" if data else "GET"
        )
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            message = f"vLLM answered {exc.code} to {path}: {error_message(exc.read())}"
            raise VllmError(message, exc.code) from None
        except OSError as exc:  # refused, reset or timed out
            reason = getattr(exc, "reason", exc)
            raise VllmError(f"vLLM did not answer {path}: {reason}{self.exit_note()}") from None

    def request(
        self, path: str, body: dict[str, Any] | None = None, timeout: float = REQUEST_TIMEOUT_SECONDS
    ) -> bytes:
        """One request's whole answer (a VllmError for an error status or no answer)."""
        with self.open(path, body, timeout) as response:
            try:
                return bytes(response.read())
            except OSError as exc:
                raise VllmError(f"vLLM broke off its answer to {path}: {exc}{self.exit_note()}") from None

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A whole `/v1/completions` answer."""
        raw = self.request("/v1/completions", body)
        try:
            answer = json.loads(raw)
        except ValueError:
            raise VllmError(f"vLLM answered /v1/completions with no JSON: {raw[:300]!r}") from None
        if not isinstance(answer, dict) or not answer.get("choices"):
            raise VllmError(f"vLLM answered /v1/completions with no choices: {raw[:300]!r}")
        return answer

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The events of a streamed answer (`stream: true`), up to `data: [DONE]`; an error event raises."""
        with self.open(path, body, REQUEST_TIMEOUT_SECONDS) as response:
            try:
                for raw in response:
                    line = raw.decode("utf-8").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        return
                    event = json.loads(data)
                    if "error" in event or event.get("object") == "error":
                        raise VllmError(f"vLLM failed {path}: {error_message(data.encode())}")
                    yield event
            except (OSError, ValueError) as exc:
                raise VllmError(f"vLLM broke off its stream of {path}: {exc}{self.exit_note()}") from None
        raise VllmError(f"vLLM's stream of {path} ended without [DONE]{self.exit_note()}")


def signal_group(group: int, signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal_number)
