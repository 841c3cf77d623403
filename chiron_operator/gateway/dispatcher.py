"""The routing core on the event loop: requests wait here for the pod the router gives them.

The router (`chiron_operator.routing.PoolRouter`) decides; the dispatcher carries its actions
out: a `Send` wakes the request's handler with its pod, a `CutOff` cancels the batch request's
upstream attempt (closing its connection, which makes vLLM abort it), a `Refuse` fails the
waiting handler with the reason. It also keeps the pods' caps current (`--max-num-seqs`, the
role's target batch size from the pool's status, this replica's share) and exports the
per-class load the operator reads (`metrics.RouterGauges`, read at scrape time).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from chiron_operator.core.enums import Role
from chiron_operator.gateway.config import BatchCapacity, PodInfo, Share
from chiron_operator.gateway.metrics import GatewayMetrics
from chiron_operator.routing import (
    DEADLINE_BUCKET_S,
    Action,
    CutOff,
    PoolRouter,
    Refuse,
    RouteReason,
    RoutingTuning,
    Send,
    Ticket,
    Wait,
    pod_cap_seqs,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_SENT_OUTCOME = {
    RouteReason.TO_INTERACTIVE: "routed",
    RouteReason.OVERFLOW_TO_MIXED: "overflowed_to_mixed",
    RouteReason.PREEMPTED_BATCH: "overflowed_to_mixed",
    RouteReason.BATCH_TO_BATCH_POD: "routed",
    RouteReason.BATCH_TO_MIXED: "routed",
    RouteReason.BATCH_TO_INTERACTIVE: "routed",
    RouteReason.PREEMPTED_LENT_BATCH: "routed",
}


class RefusedError(Exception):
    """The router refused a request: answer its client with `status`, saying why."""

    def __init__(self, refusal: Refuse) -> None:
        super().__init__(refusal.message)
        self.status = refusal.status
        self.reason = refusal.reason
        self.retry_after_s = refusal.retry_after_s


class CutOffError(Exception):
    """The request's upstream attempt was cut off to free a slot; it is queued again."""


@dataclass(eq=False)
class Pending:
    """One request between its arrival and its end, as the dispatcher tracks it."""

    ticket: Ticket
    pod: str | None = None
    waiter: asyncio.Future[str] | None = None
    attempt: asyncio.Task[object] | None = None
    cut: bool = False
    queued_at_s: float | None = None
    refusal: Refuse | None = None
    done: bool = field(default=False)
    on_send: Callable[[Pending], None] | None = None
    """Called when the router sends it (Batch API work, which has no handler waiting)."""


class Dispatcher:
    """The gateway's admission: one per process, on the event loop."""

    def __init__(
        self,
        tuning: RoutingTuning,
        metrics: GatewayMetrics,
        *,
        share: Share | None = None,
        deadline_bucket_s: float = DEADLINE_BUCKET_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.router = PoolRouter(tuning, deadline_bucket_s=deadline_bucket_s)
        self.metrics = metrics
        metrics.watch(lambda: self.router)
        self.share = share or Share()
        self.clock = clock
        self.pods: dict[str, PodInfo] = {}
        self.targets: dict[Role, int | None] = {}
        self._pending: dict[Ticket, Pending] = {}
        self._ejected: dict[str, asyncio.TimerHandle] = {}
        self.batch_capacity: BatchCapacity | None = None
        self._outputs = 0
        self._output_tokens = 0.0

    # Batch output lengths ---------------------------------------------------------------------

    def note_batch_output(self, tokens: int) -> None:
        """One completed batch request's output length: exported, and learned for estimates."""
        self.metrics.observe_batch_output(tokens)
        self.learn_batch_outputs(1, float(tokens))

    def learn_batch_outputs(self, count: int, total_tokens: float) -> None:
        self._outputs += count
        self._output_tokens += total_tokens

    @property
    def batch_output_mean_tokens(self) -> float:
        """Mean output length of the batch requests seen (NaN before the first)."""
        return self._output_tokens / self._outputs if self._outputs else math.nan

    # Pods and caps ----------------------------------------------------------------------------

    def set_pods(self, pods: Iterable[PodInfo]) -> None:
        """The pool's pods now: new ones join, changed ones update, missing ones leave."""
        fresh = {pod.name: pod for pod in pods}
        for name in set(self.pods) - set(fresh):
            self.remove_pod(name)
        for pod in fresh.values():
            self.upsert_pod(pod)

    def upsert_pod(self, pod: PodInfo) -> None:
        self.pods[pod.name] = pod
        ready = pod.ready and pod.name not in self._ejected
        self._execute(self.router.set_pod(pod.name, pod.role, self.cap_of(pod), ready=ready))

    def eject(self, name: str, seconds: float) -> None:
        """Take no new requests to a pod that gave no answer, for `seconds` (outlier ejection:
        without it, a dead static endpoint or a pod not yet seen terminating would draw every
        retry, the least loaded pod being the one that fails them all)."""
        if name not in self.pods or name in self._ejected:
            return
        log.info("pod %s gave no answer: no new requests to it for %.1f s", name, seconds)
        loop = asyncio.get_running_loop()
        self._ejected[name] = loop.call_later(seconds, self._readmit, name)
        self.upsert_pod(self.pods[name])

    def _readmit(self, name: str) -> None:
        self._ejected.pop(name, None)
        if name in self.pods:
            self.upsert_pod(self.pods[name])

    def remove_pod(self, name: str) -> None:
        """A pod is gone; requests still on it end on their own (their connections fail)."""
        self.pods.pop(name, None)
        timer = self._ejected.pop(name, None)
        if timer is not None:
            timer.cancel()
        orphans = self.router.remove_pod(name)
        if orphans:
            log.info("pod %s left with %d request(s) in flight", name, len(orphans))

    def set_targets(self, targets: Mapping[Role, int | None]) -> None:
        """The roles' target batch sizes (the local controller's fast path), applied at once."""
        if dict(targets) == self.targets:
            return
        self.targets = dict(targets)
        self._recap()

    def set_share(self, share: Share) -> None:
        if share != self.share:
            self.share = share
            self._recap()

    def cap_of(self, pod: PodInfo) -> int:
        """This replica's share of `min(--max-num-seqs, the role's target)`."""
        target = self.targets.get(pod.role)
        ceiling = pod.max_num_seqs if pod.max_num_seqs is not None else target
        if ceiling is None:
            return 0  # neither is known yet: take nothing rather than overload the pod
        return pod_cap_seqs(ceiling, target, self.share.replicas, self.share.index)

    def _recap(self) -> None:
        for pod in list(self.pods.values()):
            self.upsert_pod(pod)

    # Requests ---------------------------------------------------------------------------------

    def open(self, ticket: Ticket, on_send: Callable[[Pending], None] | None = None) -> Pending:
        """A new request: the router places it, queues it or refuses it. With `on_send`, that
        is called each time the router sends it, instead of waking a waiting handler."""
        pending = self._pending[ticket] = Pending(ticket, on_send=on_send)
        self._execute(self.router.submit(ticket, self.clock()))
        return pending

    def abandon_many(self, pendings: Iterable[Pending]) -> None:
        """Forget many requests at once (a cancelled or expired batch, a lost leadership);
        their upstream attempts are cancelled, which closes their connections."""
        gone = [p for p in pendings if not p.done]
        for pending in gone:
            pending.done = True
            self._pending.pop(pending.ticket, None)
            if pending.attempt is not None:
                pending.attempt.cancel()
        self._execute(self.router.abandon_many(p.ticket for p in gone))

    async def acquire(self, pending: Pending) -> PodInfo:
        """Wait for the pod the router gives this request (RefusedError if it refuses)."""
        while pending.pod is None:
            if pending.refusal is not None:
                raise RefusedError(pending.refusal)
            pending.waiter = asyncio.get_running_loop().create_future()
            await pending.waiter
        return self.pods[pending.pod]

    async def attempt(self, pending: Pending, work: Awaitable[T]) -> T:
        """Run one upstream attempt; CutOffError when the router cuts it off meanwhile."""
        pending.cut = False
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        pending.attempt = task
        try:
            return await task
        except asyncio.CancelledError:
            if pending.cut and not _cancelling():
                raise CutOffError from None
            raise
        finally:
            pending.attempt = None

    def finish(self, pending: Pending, outcome: str = "completed") -> None:
        """The request ended upstream: its slot is free."""
        if pending.done:
            return
        pending.done = True
        self._pending.pop(pending.ticket, None)
        self.metrics.count(pending.ticket.request_class.value, outcome)
        self._execute(self.router.finish(pending.ticket))

    def started(self, pending: Pending) -> None:
        """The pod sent the request's first token: a batch request's prefill is over, and its
        pod may take more batch work (`RoutingTuning.batch_prefills_per_pod`)."""
        if not pending.done:
            self._execute(self.router.started(pending.ticket))

    def retry(self, pending: Pending) -> None:
        """Its upstream connection failed before any byte came back: route it again."""
        pending.pod = None
        self.metrics.count(pending.ticket.request_class.value, "retried")
        self._execute(self.router.retry(pending.ticket, self.clock()))

    def requeue(self, pending: Pending) -> None:
        """A batch request lost its pod mid-stream: back to its place in the queue."""
        pending.pod = None
        self.metrics.count(pending.ticket.request_class.value, "requeued")
        self._execute(self.router.requeue(pending.ticket))

    def abandon(self, pending: Pending) -> None:
        """The client went away (or the handler failed): forget the request."""
        if pending.done:
            return
        pending.done = True
        self._pending.pop(pending.ticket, None)
        self._execute(self.router.abandon(pending.ticket))

    async def expire_forever(self, period_s: float = 0.2) -> None:
        """Refuse interactive requests that waited too long, every `period_s`."""
        while True:
            await asyncio.sleep(period_s)
            self._execute(self.router.expire(self.clock()))

    # Actions ----------------------------------------------------------------------------------

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            pending = self._pending.get(action.ticket)
            if pending is None:
                continue
            if isinstance(action, Send):
                self._sent(pending, action)
            elif isinstance(action, CutOff):
                self._cut(pending, action)
            elif isinstance(action, Refuse):
                pending.refusal = action
                self._pending.pop(action.ticket, None)
                pending.done = True
                self.metrics.count(action.ticket.request_class.value, "refused")
                _wake(pending)
            elif isinstance(action, Wait):
                pending.queued_at_s = self.clock()
                self.metrics.count(action.ticket.request_class.value, "queued")

    def _sent(self, pending: Pending, send: Send) -> None:
        pending.pod = send.pod
        if pending.queued_at_s is not None:
            self.metrics.queue_wait.observe(self.clock() - pending.queued_at_s)
            pending.queued_at_s = None
        outcome = _SENT_OUTCOME.get(send.reason)
        if outcome is not None and pending.ticket.retries == 0 and pending.ticket.cut_offs == 0:
            self.metrics.count(pending.ticket.request_class.value, outcome)
        if pending.on_send is not None:
            pending.on_send(pending)
        else:
            _wake(pending)

    def _cut(self, pending: Pending, cut: CutOff) -> None:
        pending.pod = None
        pending.cut = True
        self.metrics.preemptions.labels(cut.pod).inc()
        self.metrics.count(pending.ticket.request_class.value, "requeued")
        if pending.attempt is not None:
            pending.attempt.cancel()


def _wake(pending: Pending) -> None:
    if pending.waiter is not None and not pending.waiter.done():
        pending.waiter.set_result("")


def _cancelling() -> bool:
    """True when the current task itself is being cancelled (its client went away)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
