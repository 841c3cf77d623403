"""The demo's clients: interactive requests replayed on time, and the batch backlog's submission.

Interactive requests are open-loop: each is sent at its trace time whatever happened to the
previous ones, streamed, to the least-loaded endpoint of the `<pool>-interactive` Service, and
measured client-side (TTFT, mean ITL). A request that finds no ready endpoint fails, as it
would at a Service without endpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from chiron_operator.devcluster.demo.batch_gateway import BatchGateway, BatchRequest
from chiron_operator.devcluster.demo.traffic import Balancer, Completion, complete, request_body
from chiron_operator.sim.requests import RequestSpec

INTERACTIVE_PRIORITY = 0


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
class InteractiveReplay:
    """Sends a list of interactive requests at their arrival times (from `start_s`, unix)."""

    balancer: Balancer
    session: aiohttp.ClientSession
    model: str
    requests: Sequence[RequestSpec]
    start_s: float
    results: list[InteractiveResult] = field(default_factory=list)
    sent: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def run(self) -> None:
        """Return once every request has been sent (not answered)."""
        for spec in self.requests:
            delay = self.start_s + spec.arrival_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one(spec))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self.sent += 1

    async def _one(self, spec: RequestSpec) -> None:
        endpoint = await self.balancer.pick()
        if endpoint is None:
            self.results.append(InteractiveResult(spec, None))
            return
        body = request_body(
            self.model,
            spec.prompt_tokens,
            spec.output_tokens,
            INTERACTIVE_PRIORITY,
            stream=True,
        )
        self.balancer.inflight[endpoint.pod] += 1
        sent = time.time()
        try:
            done = await complete(self.session, endpoint, body)
        except asyncio.CancelledError:
            # Still running when the demo ended: counted, as a miss (the simulator's rule).
            cut = Completion(
                endpoint.pod, endpoint.role, sent, time.time(), False, 0, None, None, "unfinished"
            )
            self.results.append(InteractiveResult(spec, cut))
            raise
        finally:
            self.balancer.inflight[endpoint.pod] -= 1
        self.results.append(InteractiveResult(spec, done))

    async def finish(self, timeout_s: float) -> None:
        """Wait for the requests still running, at most `timeout_s`; cancel the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def submit_backlog(
    gateway: BatchGateway, requests: Sequence[RequestSpec], start_s: float
) -> None:
    """Hand the backlog to the gateway at its submission time (deadlines become unix s)."""
    if not requests:
        return
    delay = start_s + requests[0].arrival_s - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    for spec in requests:
        deadline = start_s + (spec.deadline_s if spec.deadline_s is not None else spec.arrival_s)
        gateway.submit(
            BatchRequest(
                request_id=spec.request_id,
                submitted_s=time.time(),
                deadline_s=deadline,
                prompt_tokens=spec.prompt_tokens,
                output_tokens=spec.output_tokens,
            )
        )
