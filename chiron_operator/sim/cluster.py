"""The pool's pods per role, and what Kubernetes does to them when the policy acts.

- Scale up: new pods start now and become ready after a cold start drawn from the cluster's
  own Generator.
- Scale down: pods are removed in the order a ReplicaSet with pod-deletion-cost would pick:
  not-ready pods first, then the least-loaded ready ones (ties: the newest).
- Drain (a removed ready pod): it leaves the Services at once and its waiting requests go back
  to the router; it keeps decoding its running requests for a grace period (Kubernetes'
  terminationGracePeriodSeconds), after which vLLM stops on SIGTERM and whatever still runs is
  aborted and re-queued to the router, keeping the tokens already streamed (the gateway
  resumes the request elsewhere, which recomputes prompt + streamed tokens). Every re-queue is
  counted. A pod that empties earlier terminates earlier.
- A change of --max-num-seqs restarts the role's pods, rolled with full surge: each old ready
  pod gets a replacement started at once and drains only when that replacement is ready, so
  ready capacity never dips (the overlap costs GPU time, which is counted). Starting pods with
  the old value are simply replaced.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heappush

import numpy as np

from chiron_operator.core.enums import Role
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.sim.events import Event, EventKind, EventQueue
from chiron_operator.sim.instance import Instance, InstanceState
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.podmetrics import OutputLengthStats
from chiron_operator.sim.router import Router, RoutingMode

ColdStartFn = Callable[[np.random.Generator], float]

# Enum members bound once: the boundary handler runs for nearly every event.
_READY, _DRAINING = InstanceState.READY, InstanceState.DRAINING
_INTERACTIVE = Role.INTERACTIVE
_ITERATION = EventKind.ITERATION


class Cluster:
    """Pods by role, the router over them, and the Kubernetes-side lifecycle."""

    def __init__(
        self,
        queue: EventQueue,
        latency: LatencyModel,
        *,
        routing: RoutingMode,
        cold_start_s: ColdStartFn,
        rng: np.random.Generator,
        gpus_per_instance: int = 1,
        drain_grace_s: float = 30.0,
        deadline_bucket_s: float = 60.0,
        exact: bool = False,
        max_num_batched_tokens: int | None = None,
    ) -> None:
        self._queue = queue
        # Boundaries are most of the events: pushed straight onto the heap (see EventQueue).
        self._heap = queue.heap
        self._next_sequence = queue.next_sequence
        self._latency = latency
        self._cold_start_s = cold_start_s
        self._rng = rng
        self._gpus = gpus_per_instance
        self._grace_s = drain_grace_s
        self._exact = exact
        self._max_num_batched_tokens = max_num_batched_tokens
        self.routing = routing
        self.instances: list[Instance] = []
        self.members: dict[Role, list[Instance]] = {role: [] for role in Role}
        self.ready: dict[Role, list[Instance]] = {role: [] for role in Role}
        self.max_num_seqs: dict[Role, int] = dict.fromkeys(Role, 1)
        self.router = Router(routing, self.ready, self.dispatch, deadline_bucket_s)
        self._pulls_batch = routing is RoutingMode.CHIRON
        # The router's EDF queue, tested at every boundary before asking the router to pull.
        self._batch_fifo, self._batch_late = self.router.batch_fifo, self.router.batch_late
        self.requeued = 0
        self.pod_restarts = 0
        self.completed = 0
        # Output lengths of completed batch requests (what the pool's gateway exports).
        self.output_lengths = OutputLengthStats()
        self._completed_requests = self.output_lengths.completed

    # -- requests -----------------------------------------------------------------------------

    def dispatch(self, request: LiveRequest, pod: Instance, now: float) -> None:
        """Hand a request to a pod and schedule the pod's next boundary if that changed."""
        if request.dispatch_s != request.dispatch_s:  # NaN: its first hand-off
            request.dispatch_s = now
        boundary = pod.enqueue(request, now)
        if boundary is not None:
            heappush(self._heap, (boundary, _ITERATION, self._next_sequence(), pod, pod.version))

    def on_boundary(self, now: float, pod: Instance, version: int) -> None:
        """An iteration boundary event of `pod` (ignored if `version` is stale)."""
        event = self.boundary(now, pod, version)
        if event is not None:
            heappush(self._heap, event)

    def boundary(self, now: float, pod: Instance, version: int) -> Event | None:
        """`on_boundary` without the push: the pod's next boundary event, or None. Pushes no
        event itself (a batch pull only queues on the pod, which is between segments), so the
        engine can replace the event being handled, still the heap's root, with this one."""
        if version != pod.version:
            return None
        completed = pod.end_segment(now)
        if completed:
            self.completed += len(completed)
            self._completed_requests.extend(completed)  # for `output_lengths`, when read
        state = pod.state
        if state is not _READY:
            if state is _DRAINING and pod.n_running + pod.n_waiting == 0:
                pod.terminate(now)
                return None
        elif (
            self._pulls_batch
            and (self._batch_fifo or self._batch_late)  # else refill pulls nothing
            and pod.role is not _INTERACTIVE
            and pod.n_running + pod.n_waiting < pod.max_num_seqs
        ):
            self.router.refill(pod, now)
        end = pod.start_segment(now)
        if end is None:
            return None
        return (end, _ITERATION, self._next_sequence(), pod, pod.version)

    def _requeue(self, requests: list[LiveRequest], now: float) -> None:
        for request in requests:
            request.requeues += 1
            self.requeued += 1
            self.router.submit(request, now)

    def advance_all(self, now: float) -> None:
        """Account every pod's finished decode steps up to `now` (before a scrape)."""
        for pod in self.instances:
            if pod.state is InstanceState.READY or pod.state is InstanceState.DRAINING:
                pod.advance_to(now)

    # -- pods ---------------------------------------------------------------------------------

    def bootstrap(self, replicas: dict[Role, int], max_num_seqs: dict[Role, int]) -> None:
        """Create the initial pods, ready at t=0 (a warm pool)."""
        for role in Role:
            self.max_num_seqs[role] = max_num_seqs.get(role, self.max_num_seqs[role])
            for _ in range(replicas.get(role, 0)):
                pod = self._create(role, 0.0)
                self.members[role].append(pod)
                self._make_ready(pod, 0.0)

    def _create(self, role: Role, now: float) -> Instance:
        pod = Instance(
            len(self.instances),
            role,
            self.max_num_seqs[role],
            self._latency,
            created_s=now,
            gpus=self._gpus,
            priority_scheduling=role is Role.MIXED and self.routing is RoutingMode.CHIRON,
            exact=self._exact,
            max_num_batched_tokens=self._max_num_batched_tokens,
        )
        self.instances.append(pod)
        return pod

    def _start(self, role: Role, now: float) -> Instance:
        pod = self._create(role, now)
        delay = max(0.0, float(self._cold_start_s(self._rng)))
        self._queue.push(now + delay, EventKind.INSTANCE_READY, pod, pod.version)
        return pod

    def on_ready(self, pod: Instance, now: float) -> None:
        """A pod finished its cold start (ignored if it was removed meanwhile)."""
        if pod.state is not InstanceState.STARTING:
            return
        predecessor = pod.predecessor
        if predecessor is not None:
            members = self.members[pod.role]
            members[members.index(predecessor)] = pod
            pod.predecessor = predecessor.successor = None
            self._drain(predecessor, now)
        self._make_ready(pod, now)

    def _make_ready(self, pod: Instance, now: float) -> None:
        pod.state = InstanceState.READY
        pod.ready_s = now
        self.ready[pod.role].append(pod)
        self.router.on_ready(pod, now)

    def _drain(self, pod: Instance, now: float) -> None:
        if pod.state is InstanceState.READY:
            self.ready[pod.role].remove(pod)
        pod.state = InstanceState.DRAINING
        self._requeue(pod.take_waiting(), now)
        if pod.n_running == 0:
            pod.terminate(now)
        else:
            self._queue.push(now + self._grace_s, EventKind.DRAIN_DEADLINE, pod, 0)

    def on_drain_deadline(self, pod: Instance, now: float) -> None:
        """The grace period is over: abort and re-queue what still runs, then terminate."""
        if pod.state is not InstanceState.DRAINING:
            return
        aborted = pod.abort_all(now)
        pod.terminate(now)
        self._requeue(aborted, now)

    def _remove(self, pod: Instance, now: float) -> None:
        self.members[pod.role].remove(pod)
        if pod.successor is not None:
            pod.successor.terminate(now)
            pod.successor = None
        if pod.state is InstanceState.STARTING:
            pod.terminate(now)
        else:
            self._drain(pod, now)

    # -- actuation ----------------------------------------------------------------------------

    def scale(self, role: Role, replicas: int, now: float) -> int:
        """Set the role's replica count; returns the signed change in pods."""
        members = self.members[role]
        change = max(0, replicas) - len(members)
        for _ in range(change):
            members.append(self._start(role, now))
        if change < 0:
            # Not-ready pods first, then least loaded, newest first among equals.
            victims = sorted(
                members,
                key=lambda p: (p.state is InstanceState.READY, p.load, -p.instance_id),
            )[:-change]
            for pod in victims:
                self._remove(pod, now)
        return change

    def set_max_num_seqs(self, role: Role, max_num_seqs: int, now: float) -> int:
        """Roll the role's pods to a new --max-num-seqs; returns how many pods restart."""
        if max_num_seqs < 1 or max_num_seqs == self.max_num_seqs[role]:
            return 0
        self.max_num_seqs[role] = max_num_seqs
        restarted = 0
        members = self.members[role]
        for index, pod in enumerate(list(members)):
            successor = pod.successor
            if successor is not None and successor.max_num_seqs != max_num_seqs:
                successor.terminate(now)
                pod.successor = successor = None
            if pod.max_num_seqs == max_num_seqs or successor is not None:
                continue
            restarted += 1
            if pod.state is InstanceState.STARTING:
                pod.terminate(now)
                members[index] = self._start(role, now)
            else:
                replacement = self._start(role, now)
                replacement.predecessor = pod
                pod.successor = replacement
        self.pod_restarts += restarted
        return restarted

    # -- accounting ---------------------------------------------------------------------------

    def gpu_seconds(self, end_s: float) -> float:
        """GPU-seconds from each pod's creation to its termination (or `end_s`), starting
        time included, times the GPUs per pod."""
        total = 0.0
        for pod in self.instances:
            stop = end_s if math.isnan(pod.terminated_s) else min(pod.terminated_s, end_s)
            total += max(0.0, stop - pod.created_s) * pod.gpus
        return total

    def surge_pods(self, role: Role) -> list[Instance]:
        """Replacement pods of a rolling restart that are still starting."""
        return [p.successor for p in self.members[role] if p.successor is not None]

    def in_flight(self) -> list[LiveRequest]:
        """Requests on pods (running or waiting), for the end-of-run accounting."""
        found: list[LiveRequest] = []
        for pod in self.instances:
            if pod.state is InstanceState.TERMINATED:
                continue
            for group in (*pod.running, *pod.waiting):
                found.extend(group)
        return found
