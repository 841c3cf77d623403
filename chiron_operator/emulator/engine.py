"""The engine loop: continuous batching in real time, paced by the performance model.

One asyncio task runs iterations back to back while there is work and sleeps on an event when
there is none. Each iteration asks the scheduler for its work, sleeps for the modelled duration
(decode step of the batch plus each prompt chunk, divided by the time scale) and then hands
its token to every request that decoded or finished its prompt (chunked prefill, as vLLM V1).

Pacing keeps a virtual clock: an iteration ends at the previous one's end plus its duration, not
at "now" plus its duration, so the overshoot of each `asyncio.sleep` is paid back by the next
one and token rates match the model on average. The clock may trail real time by at most
`MAX_LAG_S` (after a stall the engine resumes at the modelled pace instead of bursting). Metric
observations use these modelled instants; durations are in real seconds, i.e. what a client
measures, so with a time scale of 10 a 50 ms modelled step is observed as 5 ms.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Final

from chiron_operator.emulator.args import EmulatorConfig
from chiron_operator.emulator.metrics import FinishedRequest, VllmMetrics
from chiron_operator.emulator.scheduler import Scheduler, SeqState, Sequence, Step

log = logging.getLogger(__name__)

MAX_LAG_S: Final = 0.05


class RequestAbortedError(Exception):
    """The request was aborted before it finished (server stopping)."""


@dataclass(eq=False, slots=True)
class RequestHandle:
    """A submitted request; iterate it to receive token indices as the engine produces them.

    Iteration stops after max_tokens tokens and raises RequestAbortedError if the engine aborts it.
    """

    sequence: Sequence
    arrival_s: float
    scheduled_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    _queue: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)
    _received: int = 0

    @property
    def finished(self) -> bool:
        """True once the request has left the engine (completed or aborted)."""
        return self.sequence.state in (SeqState.FINISHED, SeqState.ABORTED)

    def put_token(self, index: int) -> None:
        """Engine side: deliver token `index` (0-based)."""
        self._queue.put_nowait(index)

    def put_abort(self) -> None:
        """Engine side: end the stream with RequestAbortedError."""
        self._queue.put_nowait(None)

    def __aiter__(self) -> RequestHandle:
        return self

    async def __anext__(self) -> int:
        if self._received >= self.sequence.max_tokens:
            raise StopAsyncIteration
        index = await self._queue.get()
        if index is None:
            raise RequestAbortedError(self.sequence.request_id)
        self._received += 1
        return index


class Engine:
    """One emulated vLLM engine: a scheduler, its pacing loop and its metrics."""

    def __init__(self, config: EmulatorConfig, metrics: VllmMetrics) -> None:
        self._model = config.latency
        self._time_scale = config.time_scale
        self._metrics = metrics
        self._scheduler = Scheduler(
            max_num_seqs=config.max_num_seqs,
            kv_blocks=config.kv_blocks,
            block_size=config.block_size,
            policy=config.scheduling_policy,
            max_num_batched_tokens=config.max_num_batched_tokens,
            preempt_for_priority=config.preempt_for_priority,
        )
        self._handles: dict[Sequence, RequestHandle] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._publish()

    @property
    def task(self) -> asyncio.Task[None]:
        """The running loop (done only if it failed or was stopped)."""
        if self._task is None:
            raise RuntimeError("engine not started")
        return self._task

    @property
    def healthy(self) -> bool:
        """True while the loop runs, as vLLM's /health reports its engine core."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.create_task(self._run(), name="chiron-emulator-engine")

    async def stop(self) -> None:
        """Abort everything and stop the loop."""
        self.abort_all()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def submit(
        self, *, request_id: str, prompt_tokens: int, max_tokens: int, priority: int
    ) -> RequestHandle:
        """Queue a request (already validated against max-model-len)."""
        seq = Sequence(request_id, prompt_tokens, max_tokens, priority)
        handle = RequestHandle(seq, asyncio.get_running_loop().time())
        self._scheduler.add(seq)
        self._handles[seq] = handle
        self._publish()
        self._wakeup.set()
        return handle

    def abort(self, handle: RequestHandle) -> None:
        """Drop a request (its client went away); no-op once it has finished."""
        if self._scheduler.abort(handle.sequence):
            del self._handles[handle.sequence]
            self._metrics.on_aborted()
            handle.put_abort()
            self._publish()
            self._wakeup.set()

    def abort_all(self) -> int:
        """Abort every request in flight, as a terminated pod does; returns how many."""
        handles = list(self._handles.values())
        for handle in handles:
            self.abort(handle)
        return len(handles)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = loop.time()
        while True:
            if not self._scheduler.has_work:
                await self._idle()
                clock = loop.time()
            step = self._scheduler.schedule()
            if not step.scheduled:
                # Unreachable while max-model-len fits the KV cache (checked at startup); wait
                # for the next submit or abort instead of spinning.
                log.error("scheduler made no progress with %d waiting", self._scheduler.num_waiting)
                await self._idle()
                continue
            start = self._start_time(step, clock, loop.time())
            self._on_scheduled(step, start)
            clock = start + step.duration_s(self._model) / self._time_scale
            # Always yield, even when behind, so HTTP handlers run between iterations.
            await asyncio.sleep(max(0.0, clock - loop.time()))
            self._on_completed(step, clock)

    async def _idle(self) -> None:
        self._wakeup.clear()
        await self._wakeup.wait()

    def _start_time(self, step: Step, clock: float, now: float) -> float:
        start = max(clock, now - MAX_LAG_S)
        # A request that arrived while the clock trailed real time cannot start before it came.
        arrivals = (self._handles[s].arrival_s for s in step.prefills)
        return max(start, *arrivals) if step.prefills else start

    def _on_scheduled(self, step: Step, start: float) -> None:
        for seq in step.prefills:
            handle = self._handles[seq]
            if handle.scheduled_s is None:
                handle.scheduled_s = start
                self._metrics.on_first_schedule(seq.prompt_tokens)
        self._metrics.on_iteration(step.num_tokens, len(step.preempted))
        self._publish()

    def _on_completed(self, step: Step, now: float) -> None:
        for seq in self._scheduler.complete(step):
            handle = self._handles[seq]
            if handle.last_token_s is None:
                handle.first_token_s = now
                self._metrics.on_token(now - handle.arrival_s, None)
            else:
                self._metrics.on_token(None, now - handle.last_token_s)
            handle.last_token_s = now
            handle.put_token(seq.generated - 1)
            if seq.state is SeqState.FINISHED:
                del self._handles[seq]
                self._metrics.on_finished(_finished(handle, now))
        self._publish()

    def _publish(self) -> None:
        s = self._scheduler
        self._metrics.set_state(s.num_running, s.num_waiting, s.kv_usage)


def _finished(handle: RequestHandle, now: float) -> FinishedRequest:
    seq = handle.sequence
    scheduled = handle.scheduled_s if handle.scheduled_s is not None else now
    first_token = handle.first_token_s if handle.first_token_s is not None else now
    return FinishedRequest(
        e2e_s=now - handle.arrival_s,
        queue_s=scheduled - handle.arrival_s,
        prefill_s=first_token - scheduled,
        decode_s=now - first_token,
        inference_s=now - scheduled,
        prompt_tokens=seq.prompt_tokens,
        generation_tokens=seq.generated,
        max_tokens=seq.max_tokens,
        preemptions=seq.preemptions,
    )
