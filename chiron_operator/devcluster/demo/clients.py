"""The demo's interactive clients: requests replayed on time through the pool's gateway (its one
entrypoint), as a user's clients would send them. The batch backlog goes through the gateway's
Batch API instead (`backlog`).

Interactive requests are open-loop: each is sent at its trace time whatever happened to the
previous ones, streamed, and measured client-side (TTFT, mean ITL). A request that finds no
gateway fails, as it would at a Service without endpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from chiron_operator.devcluster.demo.traffic import (
    Completion,
    Endpoint,
    GatewayEndpoint,
    complete,
    request_body,
)
from chiron_operator.sim.requests import RequestSpec

INTERACTIVE_PRIORITY: Final = 0  # the gateway sets the priority; this is what a client sends


@dataclass(frozen=True, slots=True)
class InteractiveResult:
    """One interactive request: when it was due (timeline s), what it asked, what it got."""

    spec: RequestSpec
    completion: Completion | None

    def met(self, ttft_slo_s: float, itl_slo_s: float) -> bool:
        """Completed, TTFT and mean ITL within target (the simulator's definition)."""
        done = self.completion
        if done is None or not done.ok or done.ttft_s is None:
            return False
        itl = done.mean_itl_s if done.mean_itl_s is not None else 0.0
        return done.ttft_s <= ttft_slo_s and itl <= itl_slo_s


@dataclass
class _Sender:
    """Requests in flight to the gateway, awaited or cancelled together."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def finish(self, timeout_s: float) -> None:
        """Wait for the requests still running, at most `timeout_s`; cancel the rest."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout_s)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def on_time(
        self,
        requests: Sequence[RequestSpec],
        start_s: float,
        one: Callable[[RequestSpec], Coroutine[Any, Any, None]],
        sent: Callable[[], None],
    ) -> None:
        """Start `one(spec)` for every request at its arrival (from `start_s`, unix seconds)."""
        for spec in requests:
            delay = start_s + spec.arrival_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.spawn(one(spec))
            sent()


def _unfinished(endpoint: Endpoint | None, sent_s: float) -> Completion:
    pod, role = (endpoint.pod, endpoint.role) if endpoint is not None else ("-", "-")
    return Completion(pod, role, sent_s, time.time(), False, 0, None, None, "unfinished")


@dataclass
class InteractiveReplay:
    """Sends a list of interactive requests at their arrival times (from `start_s`, unix)."""

    gateway: GatewayEndpoint
    session: aiohttp.ClientSession
    model: str
    requests: Sequence[RequestSpec]
    start_s: float
    results: list[InteractiveResult] = field(default_factory=list)
    sent: int = 0
    _sender: _Sender = field(default_factory=_Sender)

    async def run(self) -> None:
        """Return once every request has been sent (not answered)."""
        await self._sender.on_time(self.requests, self.start_s, self._one, self._count)

    def _count(self) -> None:
        self.sent += 1

    async def _one(self, spec: RequestSpec) -> None:
        endpoint = await self.gateway.current()
        if endpoint is None:
            self.results.append(InteractiveResult(spec, None))
            return
        body = request_body(
            self.model, spec.prompt_tokens, spec.output_tokens, INTERACTIVE_PRIORITY, stream=True
        )
        sent = time.time()
        try:
            done = await complete(self.session, endpoint, body)
        except asyncio.CancelledError:
            # Still running when the demo ended: counted, as a miss (the simulator's rule).
            self.results.append(InteractiveResult(spec, _unfinished(endpoint, sent)))
            raise
        self.results.append(InteractiveResult(spec, done))

    async def finish(self, timeout_s: float) -> None:
        await self._sender.finish(timeout_s)
