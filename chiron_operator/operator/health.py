"""/healthz and /metrics of the operator process, on one port."""

from __future__ import annotations

import threading

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chiron_operator.operator.telemetry import OperatorMetrics


def build_app(metrics: OperatorMetrics, ready: threading.Event) -> web.Application:
    """The health and metrics app: healthy once kopf reports itself ready."""

    async def healthz(_: web.Request) -> web.Response:
        if not ready.is_set():
            return web.Response(status=503, text="starting")
        return web.Response(text="ok")

    async def metrics_page(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def start(
    metrics: OperatorMetrics, ready: threading.Event, host: str, port: int
) -> web.AppRunner:
    """Serve the app; the caller cleans the runner up."""
    runner = web.AppRunner(build_app(metrics, ready))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
