"""A small batch gateway for the demo: holds a backlog, feeds the pool's batch Service, exports
its queue to Prometheus.

Batch requests are submitted with a deadline (unix seconds) and wait in the gateway, earliest
deadline first. The gateway keeps each endpoint of the `<pool>-batch` Service (batch and mixed
pods) filled up to the pod's batch size (its `chiron.io/max-num-seqs` annotation): more would
only queue inside vLLM, where the queue is invisible to the operator. Every request carries
`priority: 10`, so on mixed pods vLLM's priority scheduler serves interactive requests first and
preempts batch work for them.

`/metrics` serves `chiron_demo_batch_queued_requests{pool, deadline}`: requests still waiting
in the gateway per deadline group, in the classic text format (colons and labels as written).
A group leaves the exposition when it empties, so Prometheus marks its series stale. This is
what a pool's `spec.batchQueue.queuedRequestsQuery` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp import web

from chiron_operator.devcluster.demo.traffic import Balancer, Completion, Endpoint, complete
from chiron_operator.devcluster.demo.traffic import request_body as completion_body

METRIC: Final = "chiron_demo_batch_queued_requests"
BATCH_PRIORITY: Final = 10
DISPATCH_INTERVAL_S: Final = 0.1


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One queued batch request."""

    request_id: int
    submitted_s: float
    deadline_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """A dispatched batch request and how it ended."""

    request: BatchRequest
    completion: Completion

    @property
    def met_deadline(self) -> bool:
        return self.completion.ok and self.completion.done_s <= self.request.deadline_s


@dataclass
class BatchGateway:
    """The backlog, its dispatcher and its /metrics endpoint."""

    pool: str
    model: str
    balancer: Balancer
    session: aiohttp.ClientSession
    outcomes: list[BatchOutcome] = field(default_factory=list)
    _heap: list[tuple[float, int, BatchRequest]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _loop_task: asyncio.Task[None] | None = None
    port: int = 0

    def submit(self, request: BatchRequest) -> None:
        heapq.heappush(self._heap, (request.deadline_s, next(self._order), request))

    @property
    def queued(self) -> int:
        return len(self._heap)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def queued_by_deadline(self) -> Counter[float]:
        return Counter(item[0] for item in self._heap)

    def exposition(self) -> str:
        lines = [
            f"# HELP {METRIC} Batch requests waiting in the demo gateway, by deadline (unix s).",
            f"# TYPE {METRIC} gauge",
        ]
        for deadline, count in sorted(self.queued_by_deadline().items()):
            labels = f'pool="{self.pool}",deadline="{deadline:.0f}"'
            lines.append(f"{METRIC}{{{labels}}} {count}")
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        """Serve /metrics on a loopback port and start dispatching."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._loop_task = asyncio.create_task(self._dispatch_forever())

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            text=self.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def _dispatch_forever(self) -> None:
        while True:
            await self.dispatch_once()
            await asyncio.sleep(DISPATCH_INTERVAL_S)

    async def dispatch_once(self) -> int:
        """Fill every endpoint up to its batch size, earliest deadline first; how many sent."""
        sent = 0
        while self._heap:
            endpoint = await self.balancer.pick_with_room()
            if endpoint is None:
                break
            _, _, request = heapq.heappop(self._heap)
            self.balancer.inflight[endpoint.pod] += 1
            task = asyncio.create_task(self._send(endpoint, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            sent += 1
        return sent

    async def _send(self, endpoint: Endpoint, request: BatchRequest) -> None:
        body = completion_body(
            self.model,
            request.prompt_tokens,
            request.output_tokens,
            BATCH_PRIORITY,
            stream=False,
        )
        try:
            done = await complete(self.session, endpoint, body)
        finally:
            self.balancer.inflight[endpoint.pod] -= 1
        if done.ok:
            self.outcomes.append(BatchOutcome(request, done))
        else:
            # A pod that went away (scale-down, restart) loses its requests: back to the queue.
            self.submit(request)

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
