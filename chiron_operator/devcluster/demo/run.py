"""The demo's clients on the dev cluster's event loop, and the once-a-second sample of the pool."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from chiron_operator.devcluster.cluster.apiclient import AsyncApi
from chiron_operator.devcluster.cluster.prometheus import PrometheusProcess
from chiron_operator.devcluster.cluster.stack import DevStack
from chiron_operator.devcluster.demo.backlog import (
    BatchBacklog,
    BatchProgress,
    BatchResult,
    GatewayApi,
)
from chiron_operator.devcluster.demo.clients import InteractiveReplay, InteractiveResult
from chiron_operator.devcluster.demo.report import GATEWAY_OUTCOMES, Sample, role_samples
from chiron_operator.devcluster.demo.traffic import GatewayEndpoint
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
SELECT: Final = f'namespace="{NAMESPACE}",chiron_io_pool="{POOL}"'


class DemoClients:
    """Interactive replay and batch backlog through the gateway, run on the stack's loop; the
    backlog's input, output and error files go to `out`."""

    def __init__(self, stack: DevStack, plan: DemoPlan, out: Path) -> None:
        self._stack = stack
        self._plan = plan
        self._out = out
        self._session: aiohttp.ClientSession | None = None
        self._gateway: GatewayEndpoint | None = None
        self._api: GatewayApi | None = None
        self._replay: InteractiveReplay | None = None
        self._backlog: BatchBacklog | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.batch_total = 0

    def start(self) -> float:
        """Set the clients up and schedule the timeline; its start (unix seconds)."""
        return self._stack.loop.run(self._start())

    async def _start(self) -> float:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._gateway = GatewayEndpoint(
            AsyncApi(self._stack.url, self._session, CLIENT), NAMESPACE, POOL
        )
        start = time.time() + LEAD_S
        session, gateway = self._session, self._gateway
        self._replay = InteractiveReplay(
            gateway, session, MODEL, interactive_requests(self._plan), start
        )
        backlog = batch_requests(self._plan)
        self.batch_total = len(backlog)
        self._api = GatewayApi(gateway)
        self._backlog = BatchBacklog(self._api, MODEL, backlog, start, self._out)
        self._tasks = [
            asyncio.create_task(self._replay.run()),
            asyncio.create_task(self._backlog.run()),
        ]
        return start

    @property
    def results(self) -> list[InteractiveResult]:
        return self._replay.results if self._replay is not None else []

    @property
    def batch_progress(self) -> BatchProgress | None:
        """The backlog's batch as last read (None before it is submitted)."""
        return self._backlog.progress if self._backlog is not None else None

    @property
    def interactive_sent(self) -> int:
        return self._replay.sent if self._replay is not None else 0

    def batch_result(self) -> BatchResult:
        """How the batch ended, its files downloaded (read again if it was still running)."""
        assert self._backlog is not None, "the clients were not started"
        return self._stack.loop.run(self._backlog.conclude(), timeout_s=120)

    def gateway_counters(self) -> dict[str, int]:
        """The gateway's own counts (requests by outcome, batch preemptions), read at the end."""
        return self._stack.loop.run(self._gateway_counters(), timeout_s=30)

    async def _gateway_counters(self) -> dict[str, int]:
        found = dict.fromkeys((*GATEWAY_OUTCOMES, "batch_preemptions"), 0)
        endpoint = await self._gateway.current() if self._gateway is not None else None
        if endpoint is None or self._session is None:
            return found
        url = f"http://127.0.0.1:{endpoint.port}/metrics"
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self._session.get(url) as answer:
                return count_outcomes(await answer.text(), found)
        return found

    def finish(self) -> None:
        """Let the interactive requests in flight complete (briefly), then stop sending and
        stop following the batch (`batch_result` reads it once more)."""
        self._stack.loop.run(self._finish(), timeout_s=FINISH_TIMEOUT_S + 30)

    async def _finish(self) -> None:
        if self._replay is not None:
            await self._replay.finish(FINISH_TIMEOUT_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
        if self._api is not None:
            await self._api.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


def count_outcomes(text: str, found: dict[str, int]) -> dict[str, int]:
    """The gateway's counters from its /metrics: requests by outcome (both classes summed)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "chiron_gateway_requests_total":
                outcome = sample.labels.get("outcome", "")
                if outcome in found:
                    found[outcome] += int(sample.value)
            elif sample.name == "chiron_gateway_batch_preemptions_total":
                found["batch_preemptions"] += int(sample.value)
    return found


def _query(prometheus: PrometheusProcess, promql: str, by: str) -> dict[str, float]:
    try:
        found = prometheus.query(promql)
    except OSError:
        return {}
    return {r["metric"].get(by, ""): float(r["value"][1]) for r in found}


def _per_role(prometheus: PrometheusProcess, metric: str) -> dict[str, float]:
    promql = f"sum by (chiron_io_role) ({metric}{{{SELECT}}})"
    return _query(prometheus, promql, "chiron_io_role")


def _gateway(prometheus: PrometheusProcess, metric: str, by: str = "") -> dict[str, float]:
    grouping = f" by ({by})" if by else ""
    return _query(prometheus, f"sum{grouping} ({metric}{{{SELECT}}})", by)


def sample(
    t_s: float, status: Mapping[str, Any], clients: DemoClients, prometheus: PrometheusProcess
) -> Sample:
    """The pool's status, its pods' and gateway's load (Prometheus) and the clients, now."""
    running = _per_role(prometheus, "vllm:num_requests_running")
    waiting = _per_role(prometheus, "vllm:num_requests_waiting")
    in_flight = _gateway(prometheus, "chiron_gateway_in_flight_requests", "target_role")
    load = {
        role: (running.get(role, 0.0), waiting.get(role, 0.0), in_flight.get(role, 0.0))
        for role in ("interactive", "mixed", "batch")
    }
    batch_in_flight = _gateway(prometheus, "chiron_gateway_in_flight_requests", "class")
    return Sample(
        t_s=t_s,
        roles=role_samples(status, load),
        interactive_sent=clients.interactive_sent,
        interactive_queued=int(
            _gateway(prometheus, "chiron_gateway_queued_interactive_requests").get("", 0.0)
        ),
        batch_queued=int(_gateway(prometheus, "chiron_gateway_batch_queued_requests").get("", 0.0)),
        batch_in_flight=int(batch_in_flight.get("batch", 0.0)),
        batch=clients.batch_progress,
        last_reason=str(status.get("lastReason") or ""),
        signals=dict(status.get("signals") or {}),
    )
