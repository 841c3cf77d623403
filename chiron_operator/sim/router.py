"""Where each request goes: Chiron's class-aware routing or a uniform join-shortest-queue.

CHIRON: interactive requests go to the least-loaded ready interactive pod, overflowing to the
mixed pod with the least interactive load once every interactive pod is full (running + waiting
>= its cap); when mixed pods are full too they queue on the least-loaded interactive pod. Batch
requests wait in a pool-level queue ordered by deadline (EDF) and are pulled only by pods with a
free slot (batch pods first, then mixed), so no pod's waiting queue grows with batch work.

UNIFORM (the baselines' single pool): every request goes to the least-loaded ready pod of any
role, and pods schedule first-come first-served.

Either way, a request no ready pod may take waits in a pool-level FIFO and is dispatched as soon
as one becomes ready; its TTFT still counts from arrival.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Mapping
from enum import StrEnum
from heapq import heappop, heappush

from chiron_operator.core.enums import Role
from chiron_operator.sim.instance import Instance
from chiron_operator.sim.live import LiveRequest

_INTERACTIVE, _MIXED = Role.INTERACTIVE, Role.MIXED  # bound once: used on every arrival
_floor = math.floor

Dispatch = Callable[[LiveRequest, Instance, float], None]
"""Hand a request to a pod at a time (the cluster enqueues it and schedules the pod)."""


class RoutingMode(StrEnum):
    """How the router spreads requests over pods."""

    CHIRON = "chiron"
    UNIFORM = "uniform"


def _least_loaded(pods: list[Instance]) -> Instance | None:
    best: Instance | None = None
    best_load = 0
    for pod in pods:
        load = pod.n_running + pod.n_waiting
        if best is None or load < best_load:
            best, best_load = pod, load
    return best


def _least_loaded_with_slot(pods: list[Instance]) -> Instance | None:
    best: Instance | None = None
    best_load = 0
    for pod in pods:
        load = pod.n_running + pod.n_waiting
        if load < pod.max_num_seqs and (best is None or load < best_load):
            best, best_load = pod, load
    return best


class Router:
    """Routes requests over the ready pods the cluster maintains in `ready` (per role).

    `pool_queue` holds requests waiting for any eligible pod to become ready (FIFO);
    `batch_groups` counts the EDF queue's requests per deadline group (see `deadline_bucket_s`).

    The EDF queue is ordered by (deadline, submission sequence), kept in two parts:
    `batch_fifo`, sorted, takes every request whose deadline is no earlier than its last one's
    (nearly all: deadlines follow arrivals, and a backlog often shares one), so most pops are
    O(1) instead of a sift through thousands of tied tuples; `batch_late` is a heap for the
    others (re-queues). The earlier of the two heads is popped, which is exactly one heap's
    order. Both are public, never rebound, so that a caller can test for batch work without a
    call; only the router changes them.
    """

    __slots__ = (
        "_class_aware",
        "_dispatch",
        "_interactive",
        "_mixed",
        "_ready",
        "_sequence",
        "batch_fifo",
        "batch_groups",
        "batch_late",
        "bucket_s",
        "mode",
        "pool_queue",
    )

    def __init__(
        self,
        mode: RoutingMode,
        ready: Mapping[Role, list[Instance]],
        dispatch: Dispatch,
        deadline_bucket_s: float,
    ) -> None:
        self.mode = mode
        self._class_aware = mode is RoutingMode.CHIRON
        self._ready = ready
        # The cluster updates these lists in place; bound once for the per-arrival choice.
        self._interactive = ready[_INTERACTIVE]
        self._mixed = ready[_MIXED]
        self._dispatch = dispatch
        self.bucket_s = deadline_bucket_s
        self.pool_queue: deque[LiveRequest] = deque()
        self.batch_fifo: deque[tuple[float, int, LiveRequest]] = deque()
        self.batch_late: list[tuple[float, int, LiveRequest]] = []
        self._sequence = 0
        self.batch_groups: Counter[float] = Counter()

    @property
    def batch_queued(self) -> int:
        """Batch requests in the pool-level EDF queue."""
        return len(self.batch_fifo) + len(self.batch_late)

    def submit(self, request: LiveRequest, now: float) -> None:
        """Route an arriving (or re-queued) request."""
        if self._class_aware and not request.is_interactive:
            was_empty = not self.batch_fifo and not self.batch_late
            self._push_batch(request)
            if was_empty:
                # Pods pull whenever they free a slot, so a non-empty queue means no pod has
                # one: only the first request into an empty queue can find a taker.
                self._pull_for_new_batch(now)
            return
        target = self._choose(request)
        if target is None:
            self.pool_queue.append(request)
        else:
            self._dispatch(request, target, now)

    def _choose(self, request: LiveRequest) -> Instance | None:
        if not self._class_aware:
            best_any: Instance | None = None
            for pods in self._ready.values():
                pod = _least_loaded(pods)
                if pod is not None and (best_any is None or pod.load < best_any.load):
                    best_any = pod
            return best_any
        # _least_loaded(self._interactive), inlined: this runs on every interactive arrival.
        best: Instance | None = None
        best_load = 0
        for pod in self._interactive:
            load = pod.n_running + pod.n_waiting
            if best is None or load < best_load:
                best, best_load = pod, load
        if best is not None and best_load < best.max_num_seqs:
            return best
        return self._overflow(best)

    def _overflow(self, best: Instance | None) -> Instance | None:
        """Every interactive pod is full (or there is none): the mixed pod with the least
        interactive load if it has room, else the least-loaded interactive pod."""
        mixed: Instance | None = None
        mixed_load = 0
        for pod in self._mixed:
            # `Instance.interactive_load`, inlined: this runs on every overflowing arrival.
            if pod.priority_scheduling:
                load = len(pod.running[0]) + len(pod.waiting[0])
            else:
                load = pod.n_running + pod.n_waiting
            if mixed is None or load < mixed_load:
                mixed, mixed_load = pod, load
        if mixed is not None and (best is None or mixed_load < mixed.max_num_seqs):
            return mixed
        return best

    def on_ready(self, pod: Instance, now: float) -> None:
        """A pod became ready: place the pool-level FIFO, then let it pull batch work."""
        queue = self.pool_queue
        while queue:
            target = self._choose(queue[0])
            if target is None:
                break
            self._dispatch(queue.popleft(), target, now)
        self.refill(pod, now)

    def refill(self, pod: Instance, now: float) -> None:
        """Let a batch or mixed pod pull batch requests (EDF) into its free slots."""
        if not self._class_aware or pod.role is _INTERACTIVE:
            return
        # Bound locally: this runs after every boundary of a pod with a free slot.
        fifo, late, dispatch = self.batch_fifo, self.batch_late, self._dispatch
        while (fifo or late) and pod.n_running + pod.n_waiting < pod.max_num_seqs:
            dispatch(self._pop_batch(), pod, now)

    def _pull_for_new_batch(self, now: float) -> None:
        pod = _least_loaded_with_slot(self._ready[Role.BATCH])
        if pod is None:
            pod = _least_loaded_with_slot(self._ready[Role.MIXED])
        if pod is not None:
            self._dispatch(self._pop_batch(), pod, now)

    def _push_batch(self, request: LiveRequest) -> None:
        self._sequence = sequence = self._sequence + 1
        deadline = request.deadline_s
        fifo = self.batch_fifo
        # Sequences only grow, so a deadline no earlier than the last one keeps `batch_fifo`
        # sorted.
        if not fifo or fifo[-1][0] <= deadline:
            fifo.append((deadline, sequence, request))
        else:
            heappush(self.batch_late, (deadline, sequence, request))
        # Its deadline group, rounded down: a group is judged by its earliest possible deadline
        # (conservative).
        bucket = self.bucket_s
        self.batch_groups[_floor(deadline / bucket) * bucket] += 1

    def _pop_batch(self) -> LiveRequest:
        fifo, late = self.batch_fifo, self.batch_late
        # Keys are unique (the sequence), so the comparison never reaches the requests.
        if late and (not fifo or late[0] < fifo[0]):
            request = heappop(late)[2]
        else:
            request = fifo.popleft()[2]
        bucket = self.bucket_s
        group = _floor(request.deadline_s / bucket) * bucket
        groups = self.batch_groups
        remaining = groups[group] - 1
        if remaining:
            groups[group] = remaining
        else:
            del groups[group]
        return request

    def queued(self) -> list[LiveRequest]:
        """Every request still held by the router (for the end-of-run accounting)."""
        return [*self.pool_queue, *(entry[2] for entry in (*self.batch_fifo, *self.batch_late))]
