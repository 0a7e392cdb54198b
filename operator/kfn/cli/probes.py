"""The /healthz and /metrics endpoints of kfn's worker processes (``kfn async-worker``, ``kfn poller``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def start_probe_server(listen: str, healthz: Callable[[Any], Awaitable[Any]]) -> Any:
    """Serve ``GET /healthz`` (the caller's handler) and ``GET /metrics`` (prometheus-client's default registry) on
    ``listen`` (``host:port``; an empty host is every address). Returns the aiohttp AppRunner: ``cleanup()`` it."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    return runner
