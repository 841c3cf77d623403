"""The gateway's HTTP server: OpenAI's endpoints for one pool, /health and /metrics, on aiohttp.

- `POST /v1/chat/completions`, `POST /v1/completions`: routed by class (header
  `x-chiron-class`, interactive by default) through the dispatcher to a pod, streamed through.
- `GET /v1/models`: what the pool's pods serve (asked of a ready pod).
- `GET /health`: 200 while the gateway runs, with the ready pods per role; requests queue while
  no pod is ready, so a pool scaling up from nothing is not a gateway failure.
- `GET /metrics`: the gateway's series in Prometheus's classic text format.
- the OpenAI Batch API (`batch_api`), when the gateway has a store (`--store`): files and
  batches, run by `batch_runner` on the replica holding the store's dispatcher lock.

A client that disconnects cancels its handler (`handler_cancellation`), which frees its slot
and closes the upstream connection, so vLLM aborts the request too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chiron_operator.batches.store.threaded import AsyncStore
from chiron_operator.batches.store.url import open_store
from chiron_operator.core.enums import Role
from chiron_operator.gateway.batch_api import BatchApi, BatchLimits
from chiron_operator.gateway.batch_runner import BatchRunner, RunnerSettings
from chiron_operator.gateway.batch_work import WorkSettings
from chiron_operator.gateway.config import GatewayConfig
from chiron_operator.gateway.dispatcher import Dispatcher
from chiron_operator.gateway.errors import ApiError, error_response
from chiron_operator.gateway.metrics import GatewayMetrics
from chiron_operator.gateway.models import ModelCatalog
from chiron_operator.gateway.proxy import Forwarder

log = logging.getLogger(__name__)

Watcher = Callable[[Dispatcher], Coroutine[Any, Any, None]]
"""A task that keeps the dispatcher's pods and targets current (Kubernetes discovery)."""


@dataclass
class Gateway:
    """One gateway process: its config, dispatcher and upstream session."""

    config: GatewayConfig
    metrics: GatewayMetrics
    dispatcher: Dispatcher
    session: aiohttp.ClientSession | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    store: AsyncStore | None = None
    runner: BatchRunner | None = None
    catalog: ModelCatalog | None = None

    def client(self) -> aiohttp.ClientSession:
        assert self.session is not None, "the gateway is not started"
        return self.session

    @property
    def forwarder(self) -> Forwarder:
        assert self.session is not None, "the gateway is not started"
        return Forwarder(self.config, self.dispatcher, self.session)


GATEWAY_KEY = web.AppKey("gateway", Gateway)


def build_gateway(config: GatewayConfig) -> Gateway:
    metrics = GatewayMetrics()
    dispatcher = Dispatcher(
        config.routing, metrics, share=config.share, deadline_bucket_s=config.deadline_bucket_s
    )
    dispatcher.set_pods(config.endpoints)
    dispatcher.batch_capacity = config.batch_capacity
    gateway = Gateway(config, metrics, dispatcher)
    gateway.catalog = ModelCatalog(dispatcher, gateway.client)
    if config.store_url:
        gateway.store = AsyncStore(open_store(config.store_url))
        settings = RunnerSettings(
            poll_s=config.batch_poll_s,
            lock_name=f"chiron-batches/{config.namespace}/{config.pool}",
            max_requests=config.max_batch_requests,
            work=WorkSettings(
                max_attempts=config.batch_max_attempts,
                backoff_s=config.batch_backoff_s,
                eject_s=config.eject_s,
            ),
        )
        gateway.runner = BatchRunner(
            gateway.store, dispatcher, gateway.client, settings, models=gateway.catalog
        )
    return gateway


def build_app(gateway: Gateway, watcher: Watcher | None = None) -> web.Application:
    """The aiohttp application; `watcher` runs for the app's lifetime (pod discovery)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[GATEWAY_KEY] = gateway

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=gateway.config.connect_timeout_s)
        connector = aiohttp.TCPConnector(limit=0)
        gateway.session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        gateway.tasks.append(asyncio.create_task(gateway.dispatcher.expire_forever()))
        if watcher is not None:
            gateway.tasks.append(asyncio.create_task(watcher(gateway.dispatcher)))
        if gateway.runner is not None:
            gateway.tasks.append(asyncio.create_task(gateway.runner.run()))
        yield
        for task in gateway.tasks:
            task.cancel()
        for task in gateway.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await gateway.session.close()
        if gateway.store is not None:
            await gateway.store.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/chat/completions", _generation("/v1/chat/completions"))
    app.router.add_post("/v1/completions", _generation("/v1/completions"))
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    if gateway.store is not None:
        config = gateway.config
        limits = BatchLimits(
            config.max_file_bytes, config.max_batch_requests, config.min_batch_window_s
        )
        poke = gateway.runner.poke if gateway.runner is not None else (lambda: None)
        BatchApi(gateway.store, gateway.dispatcher, limits, poke=poke).routes(app)
    return app


def _generation(path: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        gateway: Gateway = request.app[GATEWAY_KEY]
        return await gateway.forwarder.handle(request, path)

    return handler


async def models(request: web.Request) -> web.StreamResponse:
    gateway: Gateway = request.app[GATEWAY_KEY]
    assert gateway.catalog is not None
    listing = await gateway.catalog.listing()
    if listing is None:
        return error_response(ApiError(503, "no pod of the pool is ready to list its models"))
    return web.json_response(listing)


async def health(request: web.Request) -> web.StreamResponse:
    gateway: Gateway = request.app[GATEWAY_KEY]
    ready: dict[str, int] = {role.value: 0 for role in Role}
    for pod in gateway.dispatcher.pods.values():
        if pod.ready:
            ready[pod.role.value] += 1
    found: dict[str, object] = {"status": "ok", "readyPods": ready}
    if gateway.runner is not None:
        found["batchDispatcher"] = gateway.runner.leading  # this replica runs the batch queue
    return web.json_response(found)


async def metrics(request: web.Request) -> web.StreamResponse:
    gateway: Gateway = request.app[GATEWAY_KEY]
    body = generate_latest(gateway.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve `app` until `stop` is set; a client's disconnect cancels its handler."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("chiron-gateway listening on http://%s:%d", host, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
