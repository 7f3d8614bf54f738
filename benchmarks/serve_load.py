"""python benchmarks/serve_load.py [--model smollm2-135m-instruct] [--clients 1 8 32] [--max-tokens 64]
                                  [--servers hone transformers] [--requests 2]
                                  [--engine transformers llama.cpp]

Load on an OpenAI-compatible server over loopback, side by side in one run:
  hone           `hone serve` (requests batched together, up to serve.max_batch)
  transformers   `transformers serve MODEL` (the HF stack's own server), at the same dtype
`--engine` runs `hone serve` once per engine named (`serve.engine`): `hone` is the transformers engine,
`hone[llama.cpp]` the llama.cpp one (its default Q4_K_M GGUF, made before the server is ready).
Each server runs as its own process on a free 127.0.0.1 port. For each number of concurrent clients,
every client sends `--requests` chat completions one after another (clients x requests in all, at least
8): the example task's test prompts, greedy, the same `max_tokens`. Reported per server and client count:
completed requests/s, output tokens/s (from each reply's usage), p50 and p99 latency, errors, the server
process's resident memory before and after; and hone's output tokens/s over transformers serve's (and
each other engine's over hone's transformers engine).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_SPLIT = REPO / "examples" / "support-tickets" / "test.jsonl"


def prompts(limit: int = 64) -> list[list[dict[str, str]]]:
    """The example task's test prompts: each chat up to the assistant's answer."""
    chats = []
    for line in TEST_SPLIT.read_text(encoding="utf-8").splitlines()[:limit]:
        messages = json.loads(line)["messages"]
        chats.append([m for m in messages if m["role"] != "assistant"])
    return chats


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: dict[str, Any], timeout: float = 600) -> tuple[int, dict[str, Any] | None]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def command(server: str, model: str, port: int, dtype: str, folder: Path) -> tuple[list[str], str, str]:
    """(the command line, the health path, the `model` a request names) of one server."""
    if server == "hone" or server.startswith("hone["):
        engine = server.removeprefix("hone[").removesuffix("]") if "[" in server else "transformers"
        config = folder / "serve.yaml"
        serve = {"engine": engine, "host": "127.0.0.1", "port": port, "max_batch": 32, "max_queue": 1024,
                 "max_tokens": 4096, "precision": dtype,
                 "request_log": f"sqlite:///{folder / 'requests.db'}"}  # fmt: skip
        config.write_text(yaml.safe_dump({"model": {"reference": model}, "serve": serve}))
        hone = [sys.executable, "-c", "from hone.cli import main; main()"]
        line = [*hone, "serve", "-c", str(config), f"track.uri=sqlite:///{folder / 'mlflow.db'}"]
        return line, "/readyz", "base"
    if server == "transformers":
        from hone.models.resolve import resolve_model

        path = str(resolve_model(model))
        dtypes = {"bf16": "bfloat16", "fp32": "float32"}
        cli = "import sys; from transformers.cli.transformers import main; sys.exit(main())"
        line = [sys.executable, "-c", cli, "serve", path, "--port", str(port)]
        line += ["--host", "127.0.0.1", "--device", "cpu"]
        if dtype in dtypes:
            line += ["--dtype", dtypes[dtype]]
        return line, "/health", path
    raise SystemExit(f"unknown server {server!r}: hone or transformers")


@contextmanager
def running(server: str, model: str, dtype: str) -> Iterator[tuple[str, str, int]]:
    """The server started and ready: (its base URL, the model name to request, its process id)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"serve-load-{server}-") as folder:
        line, health, name = command(server, model, port, dtype, Path(folder))
        log = open(Path(folder) / "server.log", "w")  # noqa: SIM115 - closed below
        process = subprocess.Popen(line, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    output = (Path(folder) / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"{server} exited: {output}")
                try:
                    with urllib.request.urlopen(url + health, timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    time.sleep(0.5)
            yield url, name, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


def resident_mib(pid: int) -> float | None:
    """The server process's resident memory in MiB (Linux), to see that it stays flat under load."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def load(
    url: str, name: str, clients: int, requests: int, max_tokens: int, chats: list[Any]
) -> dict[str, Any]:
    """`clients` threads, each sending `requests` chat completions one after another."""
    latencies: list[float] = []
    tokens: list[int] = []
    errors = 0
    lock = threading.Lock()

    def client(index: int) -> None:
        nonlocal errors
        for turn in range(requests):
            messages = chats[(index * requests + turn) % len(chats)]
            body = {"model": name, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
            began = time.perf_counter()
            status, reply = post(url + "/v1/chat/completions", body)
            seconds = time.perf_counter() - began
            with lock:
                if status == 200 and reply is not None:
                    latencies.append(seconds)
                    tokens.append(int((reply.get("usage") or {}).get("completion_tokens", 0)))
                else:
                    errors += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(latencies) + errors,
        "completed": len(latencies),
        "errors": errors,
        "seconds": wall,
        "requests_per_second": len(latencies) / wall,
        "output_tokens_per_second": sum(tokens) / wall,
        "p50_seconds": statistics.median(ordered) if ordered else None,
        "p99_seconds": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else None,
    }


def run(
    servers: list[str],
    model: str,
    clients: list[int],
    requests: int,
    max_tokens: int,
    dtype: str,
    engines: tuple[str, ...] = ("transformers",),
) -> dict[str, Any]:
    chats = prompts()
    hone = ["hone" if engine == "transformers" else f"hone[{engine}]" for engine in engines]
    servers = [name for server in servers for name in (hone if server == "hone" else [server])]
    results: dict[str, list[dict[str, Any]]] = {}
    for server in servers:
        with running(server, model, dtype) as (url, name, pid):
            warm_up = {"model": name, "messages": chats[0], "max_tokens": 4}
            post(url + "/v1/chat/completions", warm_up)
            results[server] = []
            for count in clients:
                before = resident_mib(pid)
                row = load(url, name, count, max(requests, -(-8 // count)), max_tokens, chats)
                results[server].append({**row, "rss_mib_before": before, "rss_mib_after": resident_mib(pid)})
    ratios = {}
    if "hone" in results and "transformers" in results:
        for mine, theirs in zip(results["hone"], results["transformers"], strict=True):
            if theirs["output_tokens_per_second"]:
                ratios[mine["clients"]] = (
                    mine["output_tokens_per_second"] / theirs["output_tokens_per_second"]
                )
    engine_ratios: dict[str, dict[int, float]] = {}  # another engine's output tokens/s over transformers'
    for server in [name for name in results if name.startswith("hone[") and "hone" in results]:
        engine_ratios[server] = {
            mine["clients"]: mine["output_tokens_per_second"] / theirs["output_tokens_per_second"]
            for mine, theirs in zip(results[server], results["hone"], strict=True)
            if theirs["output_tokens_per_second"]
        }
    return {"model": model, "max_tokens": max_tokens, "dtype": dtype, "results": results, "ratios": ratios,
            "engine_ratios": engine_ratios}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--servers", nargs="+", default=["hone", "transformers"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=2, help="Requests per client (at least 8 in all).")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument(
        "--engine", nargs="+", default=["transformers"], choices=["transformers", "llama.cpp", "vllm"],
        help="hone serve's engines, one server each (the `hone` of --servers).",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    report = run(
        args.servers, args.model, args.clients, args.requests, args.max_tokens, args.dtype, tuple(args.engine)
    )
    columns = "server | clients | requests | req/s | output tok/s | p50 s | p99 s | errors | RSS MiB"
    print(f"| {columns} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for server, rows in report["results"].items():
        for row in rows:
            print(
                f"| {server} | {row['clients']} | {row['requests']} | {row['requests_per_second']:.2f} | "
                f"{row['output_tokens_per_second']:.1f} | {row['p50_seconds'] or 0:.2f} | "
                f"{row['p99_seconds'] or 0:.2f} | {row['errors']} | "
                f"{row['rss_mib_before'] or 0:.0f} -> {row['rss_mib_after'] or 0:.0f} |"
            )
    for clients, ratio in report["ratios"].items():
        print(f"hone / transformers serve, output tokens/s at {clients} clients: {ratio:.2f}x")
    for server, ratios in report["engine_ratios"].items():
        for clients, ratio in ratios.items():
            print(f"{server} / hone (transformers), output tokens/s at {clients} clients: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
