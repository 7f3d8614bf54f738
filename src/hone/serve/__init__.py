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
    """The loaded base model and tokenizer, the engine, the resolver, the log and the FastAPI app."""
    from hone.models.resolve import load_model, load_tokenizer, local_inference, resolve_model
    from hone.serve.app import Metrics, Server, create_app
    from hone.serve.engine import TransformersEngine
    from hone.serve.log import RequestLog
    from hone.serve.models import Resolver

    serve = settings.serve
    if not serve.api_key_sha256 and not loopback(serve.host):
        raise HoneError(
            f"serve.host: {serve.host} is reachable from other machines; set serve.api_key_sha256 "
            "(`hone serve-key` makes a key) or listen on 127.0.0.1"
        )
    base = serve.base_model or settings.model.reference
    path = resolve_model(base)
    device, dtype = local_inference(serve.precision)
    model = load_model(path, dtype, device, opt_in=settings.model)
    tokenizer = load_tokenizer(path, settings.model)
    engine = TransformersEngine(model, tokenizer, serve.max_adapters, serve.max_batch, serve.max_queue)
    server = Server(settings, engine, Resolver(settings), RequestLog(serve.request_log, serve.redact_pii),
                    Metrics.create())  # fmt: skip
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


def run_server(settings: ServeFile, console: Console) -> None:
    import uvicorn

    server, app = build_server(settings)
    serve = settings.serve
    console.print(
        f"[bold]hone serve[/] {server.resolver.base_reference} on http://{serve.host}:{serve.port}/v1"
    )
    uvicorn.run(app, host=serve.host, port=serve.port, log_level="warning", timeout_graceful_shutdown=60)
