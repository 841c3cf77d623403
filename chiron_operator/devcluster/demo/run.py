"""The demo's clients on the dev cluster's event loop, and the once-a-second sample of the pool."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

from chiron_operator.core.enums import RequestClass
from chiron_operator.devcluster.cluster.apiclient import AsyncApi
from chiron_operator.devcluster.cluster.prometheus import PrometheusProcess
from chiron_operator.devcluster.cluster.stack import DevStack
from chiron_operator.devcluster.demo.batch_gateway import BatchGateway, BatchOutcome
from chiron_operator.devcluster.demo.clients import (
    InteractiveReplay,
    InteractiveResult,
    submit_backlog,
)
from chiron_operator.devcluster.demo.report import Sample, role_samples
from chiron_operator.devcluster.demo.traffic import Balancer, Endpoints
from chiron_operator.devcluster.demo.workload import (
    MODEL,
    NAMESPACE,
    POOL,
    DemoPlan,
    batch_requests,
    interactive_requests,
)

LEAD_S: Final = 0.5  # the clients' clock starts this long after they are set up
FINISH_TIMEOUT_S: Final = 10.0
CLIENT: Final = "demo-clients"


class DemoClients:
    """Interactive replay and batch gateway, run on the stack's loop, read from any thread."""

    def __init__(self, stack: DevStack, plan: DemoPlan, gateway_port: int) -> None:
        self._stack = stack
        self._plan = plan
        self._gateway_port = gateway_port
        self._session: aiohttp.ClientSession | None = None
        self._replay: InteractiveReplay | None = None
        self._gateway: BatchGateway | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.batch_total = 0

    def start(self) -> float:
        """Set the clients up and schedule the timeline; its start (unix seconds)."""
        return self._stack.loop.run(self._start())

    async def _start(self) -> float:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        api = AsyncApi(self._stack.url, self._session, CLIENT)
        interactive = Balancer(Endpoints(api, NAMESPACE, POOL, RequestClass.INTERACTIVE))
        batch = Balancer(Endpoints(api, NAMESPACE, POOL, RequestClass.BATCH))
        start = time.time() + LEAD_S
        self._replay = InteractiveReplay(
            interactive, self._session, MODEL, interactive_requests(self._plan), start
        )
        self._gateway = BatchGateway(POOL, MODEL, batch, self._session, port=self._gateway_port)
        await self._gateway.start()
        backlog = batch_requests(self._plan)
        self.batch_total = len(backlog)
        self._tasks = [
            asyncio.create_task(self._replay.run()),
            asyncio.create_task(submit_backlog(self._gateway, backlog, start)),
        ]
        return start

    @property
    def results(self) -> list[InteractiveResult]:
        return self._replay.results if self._replay is not None else []

    @property
    def batch(self) -> list[BatchOutcome]:
        return self._gateway.outcomes if self._gateway is not None else []

    def counters(self) -> tuple[int, int, int]:
        """(interactive sent, batch queued in the gateway, batch in flight)."""
        sent = self._replay.sent if self._replay is not None else 0
        gateway = self._gateway
        return sent, gateway.queued if gateway else 0, gateway.in_flight if gateway else 0

    def finish(self) -> None:
        """Let the requests in flight complete (briefly), then stop."""
        self._stack.loop.run(self._finish(), timeout_s=FINISH_TIMEOUT_S + 30)

    async def _finish(self) -> None:
        if self._replay is not None:
            await self._replay.finish(FINISH_TIMEOUT_S)
        await self._stop()

    def stop(self) -> None:
        """Cancel everything still running (idempotent; safe after a failure)."""
        with contextlib.suppress(Exception):
            self._stack.loop.run(self._stop(), timeout_s=30)

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._replay is not None:
            await self._replay.finish(0.0)
        if self._gateway is not None:
            await self._gateway.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _per_role(prometheus: PrometheusProcess, metric: str) -> dict[str, float]:
    promql = (
        f'sum by (chiron_io_role) ({metric}{{namespace="{NAMESPACE}",chiron_io_pool="{POOL}"}})'
    )
    try:
        found = prometheus.query(promql)
    except OSError:
        return {}
    return {r["metric"].get("chiron_io_role", ""): float(r["value"][1]) for r in found}


def sample(
    t_s: float, status: Mapping[str, Any], clients: DemoClients, prometheus: PrometheusProcess
) -> Sample:
    """The pool's status, its pods' load (Prometheus) and the clients' counters, now."""
    running = _per_role(prometheus, "vllm:num_requests_running")
    waiting = _per_role(prometheus, "vllm:num_requests_waiting")
    load = {
        role: (running.get(role, 0.0), waiting.get(role, 0.0))
        for role in ("interactive", "mixed", "batch")
    }
    sent, queued, in_flight = clients.counters()
    return Sample(
        t_s=t_s,
        roles=role_samples(status, load),
        interactive_sent=sent,
        batch_queued=queued,
        batch_in_flight=in_flight,
        batch_done=len(clients.batch),
        last_reason=str(status.get("lastReason") or ""),
        signals=dict(status.get("signals") or {}),
    )
