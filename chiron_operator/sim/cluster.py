"""The pool's pods per role, what Kubernetes does to them when the policy acts, and the
router's actions carried out on them.

- Scale up: new pods start now and become ready after a cold start drawn from the cluster's
  own Generator.
- Scale down: pods are removed in the order a ReplicaSet with pod-deletion-cost would pick:
  not-ready pods first, then the least-loaded ready ones (ties: the newest).
- Drain (a removed ready pod): it leaves the Services at once and its waiting requests go back
  to the router; it keeps decoding its running requests for a grace period (Kubernetes'
  terminationGracePeriodSeconds), after which vLLM stops on SIGTERM and whatever still runs is
  aborted and handed back to the router. An interactive request keeps the tokens already
  streamed (it is resumed elsewhere, which recomputes prompt + streamed tokens); a batch request
  does too with Services or uniform routing, while the gateway resends batch work from scratch
  (`dispatcher`). Every hand-back is counted. A pod that empties earlier terminates earlier.
- A cut-off (the gateway closing a batch request's stream to free a slot) aborts the request on
  its pod, at the end of the iteration in progress. Should the router send it again before then,
  the resend waits for that boundary, so that a request is never on two pods at once.
- A change of --max-num-seqs restarts the role's pods, rolled with full surge: each old ready
  pod gets a replacement started at once and drains only when that replacement is ready, so
  ready capacity never dips (the overlap costs GPU time, which is counted). Starting pods with
  the old value are simply replaced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from heapq import heappush

import numpy as np

from chiron_operator.core.enums import Role
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.routing import DEADLINE_BUCKET_S, RoutingTuning
from chiron_operator.sim.dispatcher import GatewayRouter
from chiron_operator.sim.events import Event, EventKind, EventQueue
from chiron_operator.sim.instance import Instance, InstanceState
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.podmetrics import OutputLengthStats
from chiron_operator.sim.router import Router, RoutingMode, UniformRouter
from chiron_operator.sim.services import ServicesRouter

ColdStartFn = Callable[[np.random.Generator], float]

# Enum members bound once: the boundary handler runs for nearly every event.
_READY, _DRAINING = InstanceState.READY, InstanceState.DRAINING
_ITERATION = EventKind.ITERATION


class Cluster:
    """Pods by role, the router over them, and the Kubernetes-side lifecycle.

    `routing_rng` draws the Services' random choices (SERVICES mode only); `routing_tuning`
    is the gateway's (CHIRON mode only); `preempt_for_priority` is the engine option of every
    pod (see `scheduling`)."""

    def __init__(
        self,
        queue: EventQueue,
        latency: LatencyModel,
        *,
        routing: RoutingMode,
        cold_start_s: ColdStartFn,
        rng: np.random.Generator,
        routing_rng: np.random.Generator | None = None,
        routing_tuning: RoutingTuning | None = None,
        preempt_for_priority: bool = False,
        gpus_per_instance: int = 1,
        drain_grace_s: float = 30.0,
        deadline_bucket_s: float = DEADLINE_BUCKET_S,
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
        self._preempt_for_priority = preempt_for_priority
        self.routing = routing
        self.instances: list[Instance] = []
        self.members: dict[Role, list[Instance]] = {role: [] for role in Role}
        self.ready: dict[Role, list[Instance]] = {role: [] for role in Role}
        self.max_num_seqs: dict[Role, int] = dict.fromkeys(Role, 1)
        self.router: Router = self._router(
            routing, routing_tuning or RoutingTuning(), routing_rng, deadline_bucket_s
        )
        self._tracks_completions = self.router.tracks_completions
        self._tracks_first_tokens = self.router.tracks_first_tokens
        # Cut-off requests whose abort takes effect at their pod's next boundary -> the pod the
        # router has sent them to since, if it has.
        self._held: dict[LiveRequest, Instance | None] = {}
        self.requeued = self.pod_restarts = self.completed = self.cut_offs = self.refused = 0
        # Output lengths of completed batch requests (what the pool's gateway exports).
        self.output_lengths = OutputLengthStats()
        self._completed_requests = self.output_lengths.completed

    def _router(
        self,
        mode: RoutingMode,
        tuning: RoutingTuning,
        rng: np.random.Generator | None,
        deadline_bucket_s: float,
    ) -> Router:
        if mode is RoutingMode.CHIRON:
            return GatewayRouter(tuning, self, deadline_bucket_s=deadline_bucket_s)
        if mode is RoutingMode.SERVICES:
            return ServicesRouter(self.ready, self, rng or np.random.default_rng(0))
        return UniformRouter(self.ready, self)

    # -- the router's actions (`router.PodActions`) -------------------------------------------

    def dispatch(self, request: LiveRequest, pod: Instance, now: float) -> None:
        """Hand a request to a pod and schedule the pod's next boundary if that changed."""
        if self._held and request in self._held:
            self._held[request] = pod  # sent on once its abort elsewhere takes effect
            return
        if request.dispatch_s != request.dispatch_s:  # NaN: its first hand-off
            request.dispatch_s = now
        boundary = pod.enqueue(request, now)
        if boundary is not None:
            heappush(self._heap, (boundary, _ITERATION, self._next_sequence(), pod, pod.version))

    def cut_off(self, request: LiveRequest, pod: Instance, now: float) -> None:
        """Abort a batch request on its pod; the router has queued it again."""
        self.cut_offs += 1
        if request in self._held:
            self._held[request] = None  # cut off where it was only about to go
            return
        boundary = pod.abort(request, now)
        if boundary is not None:
            heappush(self._heap, (boundary, _ITERATION, self._next_sequence(), pod, pod.version))
        if pod.pending_abort(request):
            self._held[request] = None

    def refuse(self, request: LiveRequest, reason: str) -> None:
        """The request fails with `reason` (a miss, recorded as its drop reason)."""
        request.drop_reason = reason
        self.refused += 1

    def wake_at(self, time_s: float) -> None:
        self._queue.push(time_s, EventKind.ROUTER_TIMER)

    def on_timer(self, now: float) -> None:
        """A router's timer (the gateway's queue expiry)."""
        self.router.on_timer(now)

    def set_targets(self, targets: Mapping[Role, int], now: float) -> None:
        """The policy's target batch sizes, which the gateway caps pods at (its fast path)."""
        self.router.set_targets(targets, now)

    def _release(self, pod: Instance, now: float) -> None:
        """Send on the requests whose abort on `pod` took effect, where the router sent them."""
        for request in pod.released:
            destination = self._held.pop(request, None)
            if destination is not None:
                self.dispatch(request, destination, now)
        pod.released.clear()

    # -- boundaries ---------------------------------------------------------------------------

    def on_boundary(self, now: float, pod: Instance, version: int) -> None:
        """An iteration boundary event of `pod` (ignored if `version` is stale)."""
        event = self.boundary(now, pod, version)
        if event is not None:
            heappush(self._heap, event)

    def boundary(self, now: float, pod: Instance, version: int) -> Event | None:
        """`on_boundary` without the push: the pod's next boundary event, or None. What the
        router does meanwhile may push other pods' boundaries, never earlier than this event or
        of an earlier kind, so the engine can replace the event being handled, still the heap's
        root, with this one."""
        if version != pod.version:
            return None
        completed = pod.end_segment(now)
        if pod.released:
            self._release(pod, now)
        if completed:
            self.completed += len(completed)
            self._completed_requests.extend(completed)  # for `output_lengths`, when read
            if self._tracks_completions:
                self.router.on_completed(pod, completed, now)
        if pod.state is _DRAINING and pod.n_running + pod.n_waiting == 0:
            self._terminate(pod, [], now)
            return None
        end = pod.start_segment(now)
        version = pod.version
        started = pod.first_batch_tokens
        if started:
            # The router hears of the first tokens the planned head produces now, not when it
            # ends: the next batch request then waits in the pod's queue for that head, as the
            # gateway's would arrive just after the token streamed back (a step later at most),
            # and FAST mode, with no boundary there, agrees with EXACT. A send to this pod
            # replans its segment (a newer version): the event below is then stale.
            pod.first_batch_tokens = []
            self.router.on_first_tokens(pod, started, now)
        if end is None:
            return None
        return (end, _ITERATION, self._next_sequence(), pod, version)

    def _handed_back(self, requests: list[LiveRequest]) -> list[LiveRequest]:
        for request in requests:
            request.requeues += 1
        self.requeued += len(requests)
        return requests

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
            # The operator runs mixed pods with vLLM's priority policy; the baselines' single
            # pool is plain vLLM (FCFS).
            priority_scheduling=role is Role.MIXED and self.routing is not RoutingMode.UNIFORM,
            preempt_for_priority=self._preempt_for_priority,
            exact=self._exact,
            max_num_batched_tokens=self._max_num_batched_tokens,
        )
        if self._tracks_first_tokens and role is not Role.BATCH:
            pod.first_batch_tokens = []
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
        waiting = pod.take_waiting()
        if self._held:
            # Resends held for it never reached it: they go elsewhere with its waiting ones.
            held = [r for r, destination in self._held.items() if destination is pod]
            for request in held:
                self._held[request] = None
            waiting += held
        self.router.on_draining(pod, self._handed_back(waiting), now)
        if pod.n_running == 0:
            self._terminate(pod, [], now)
        else:
            self._queue.push(now + self._grace_s, EventKind.DRAIN_DEADLINE, pod, 0)

    def on_drain_deadline(self, pod: Instance, now: float) -> None:
        """The grace period is over: abort and hand back what still runs, then terminate."""
        if pod.state is not InstanceState.DRAINING:
            return
        aborted = pod.abort_all(now)
        if pod.released:
            self._release(pod, now)
        self._terminate(pod, aborted, now)

    def _terminate(self, pod: Instance, aborted: list[LiveRequest], now: float) -> None:
        pod.terminate(now)
        self.router.on_gone(pod, self._handed_back(aborted), now)

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
