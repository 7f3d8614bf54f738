"""`hone serve`: an OpenAI-compatible server over one base model and the registry's adapters.

The pieces: `models` (what a request's `model` names, registry aliases followed), `engine` (one base in
memory, many LoRA adapters, requests batched), `app` (the HTTP API, limits, keys, metrics) and `log` (the
request log, PII redacted).
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from rich.console import Console

from hone.config import ServeFile
from hone.errors import HoneError


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_server(settings: ServeFile) -> Any:
    """The engine (the base model loaded), the resolver, the log and the FastAPI app."""
    from hone.serve.app import Metrics, Server, create_app
    from hone.serve.checks import OnlineChecks
    from hone.serve.log import RequestLog
    from hone.serve.models import Resolver

    serve = settings.serve
    if not serve.api_key_sha256 and not loopback(serve.host):
        raise HoneError(
            f"serve.host: {serve.host} is reachable from other machines; set serve.api_key_sha256 "
            "(`hone serve-key` makes a key) or listen on 127.0.0.1"
        )
    checks = OnlineChecks.from_config(settings.monitor)  # a bad schema fails before the model loads
    engine = create_engine(settings)
    server = Server(settings, engine, Resolver(settings), RequestLog(serve.request_log, serve.redact_pii),
                    Metrics.create(), checks)  # fmt: skip
    app = create_app(server)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        engine.start()
        server.ready = True
        try:
            yield
        finally:  # uvicorn has let the requests in flight finish (SIGTERM included)
            server.ready = False
            engine.stop()
            server.log.close()

    app.router.lifespan_context = lifespan
    return server, app


def create_engine(settings: ServeFile) -> Any:
    """The configured engine, its base model loaded (vllm: its server started when the engine starts)."""
    from hone.models.resolve import load_model, load_tokenizer, local_inference, resolve_model

    serve = settings.serve
    path = resolve_model(serve.base_model or settings.model.reference)
    tokenizer = load_tokenizer(path, settings.model)
    if serve.engine == "transformers":
        from hone.serve.engine import TransformersEngine

        device, dtype = local_inference(serve.precision)
        model = load_model(path, dtype, device, opt_in=settings.model)
        return TransformersEngine(model, tokenizer, serve.max_adapters, serve.max_batch, serve.max_queue)
    if serve.engine == "vllm":
        from hone.serve.vllm import VllmEngine

        return VllmEngine.create(settings, path, tokenizer)
    if serve.engine == "llama.cpp":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise HoneError(
                "serve.engine: llama.cpp needs llama-cpp-python: pip install 'hone[llama-cpp]' (it compiles "
                "llama.cpp, which takes some minutes)"
            ) from None
        from hone.serve.llama_cpp import LlamaCppEngine

        base_name = serve.base_model or settings.model.reference
        return LlamaCppEngine(
            path, base_name, tokenizer, serve.llama_cpp, serve.max_adapters, serve.max_queue
        )
    raise HoneError(f"serve.engine: {serve.engine} is not available yet")


def run_server(settings: ServeFile, console: Console) -> None:
    import uvicorn

    server, app = build_server(settings)
    serve = settings.serve
    console.print(
        f"[bold]hone serve[/] {server.resolver.base_reference} on http://{serve.host}:{serve.port}/v1"
    )
    uvicorn.run(app, host=serve.host, port=serve.port, log_level="warning", timeout_graceful_shutdown=60)
