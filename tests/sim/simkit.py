"""Shared helpers for the simulator's tests: a hand-checkable latency model, fixed policies and
a driver for one pod or a cluster without the full engine."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.decision import PoolDecision, RoleDecision, Verdict
from chiron_operator.core.enums import Reason, RequestClass, Role
from chiron_operator.core.snapshot import PoolSnapshot
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.sim.cluster import Cluster
from chiron_operator.sim.events import EventKind, EventQueue
from chiron_operator.sim.instance import Instance
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.requests import RequestSpec

# decode step = 10 ms + 1 ms per sequence; prefill = 20 ms + 0.1 ms per prompt token.
SIMPLE = LatencyModel("simple", 10.0, 1.0, 0.0, 20.0, 0.1, 0.0, 1_000_000)
# Llama-3.1-8B on an H100, roughly: context-dependent decode, quadratic prefill.
H100_LIKE = LatencyModel("h100-like", 6.0, 0.011, 4.3e-05, 5.5, 0.013, 9.2e-07, 400_000)

Plan = Callable[[float], Mapping[Role, tuple[int, int] | tuple[int, int, int]]]
"""Time -> {role: (replicas, max_num_seqs[, target batch size])} for a scripted policy; the
target defaults to max_num_seqs."""


@dataclass(frozen=True)
class Seen:
    """What a scripted policy remembers: every snapshot it was given."""

    snapshots: tuple[PoolSnapshot, ...] = ()


def scripted_policy(plan: Plan, name: str = "scripted") -> BoundPolicy[None, Seen]:
    """A policy deciding `plan(now)` and recording every snapshot in its state."""

    def decide(snapshot: PoolSnapshot, _tuning: None, state: Seen) -> tuple[PoolDecision, Seen]:
        roles = {
            role: RoleDecision(
                role,
                Verdict(sizes[0], Reason.STATIC, "scripted"),
                Verdict(sizes[1], Reason.STATIC, "scripted"),
                sizes[-1],
            )
            for role, sizes in plan(snapshot.now_s).items()
        }
        decision = PoolDecision(snapshot.now_s, roles, {"ticks": len(state.snapshots) + 1.0})
        return decision, Seen((*state.snapshots, snapshot))

    return BoundPolicy(name, None, decide, Seen())


def fixed_policy(sizes: Mapping[Role, tuple[int, int]]) -> BoundPolicy[None, Seen]:
    """A policy that always asks for the same replicas and max_num_seqs."""
    return scripted_policy(lambda _now: sizes, "fixed")


def spec(
    request_id: int,
    arrival_s: float,
    prompt: int,
    output: int,
    request_class: RequestClass = RequestClass.INTERACTIVE,
    deadline_s: float | None = None,
) -> RequestSpec:
    return RequestSpec(request_id, arrival_s, request_class, prompt, output, deadline_s)


def live(
    request_id: int,
    prompt: int,
    output: int,
    request_class: RequestClass = RequestClass.INTERACTIVE,
) -> LiveRequest:
    return LiveRequest(spec(request_id, 0.0, prompt, output, request_class), 3600.0)


def drive_pod(
    pod: Instance,
    arrivals: Sequence[tuple[float, LiveRequest]],
    *,
    until: float = math.inf,
    check: Callable[[Instance], None] | None = None,
) -> list[LiveRequest]:
    """Run one pod alone: arrivals (at their times) and its boundaries, arrivals first at ties
    as in the engine. `check` runs after every boundary. Returns completions in order."""
    pending = sorted(arrivals, key=lambda a: a[0])
    boundary: float | None = None
    done: list[LiveRequest] = []
    while True:
        next_arrival = pending[0][0] if pending else math.inf
        next_boundary = math.inf if boundary is None else boundary
        now = min(next_arrival, next_boundary)
        if now > until or now == math.inf:
            return done
        if next_arrival <= next_boundary:
            scheduled = pod.enqueue(pending.pop(0)[1], now)
            boundary = boundary if scheduled is None else scheduled
            continue
        done.extend(pod.end_segment(now))
        boundary = pod.start_segment(now)
        if check is not None:
            check(pod)


def drive_cluster(cluster: Cluster, queue: EventQueue, until: float) -> None:
    """Process a cluster's own events (boundaries, readiness, drain deadlines) up to `until`."""
    heap = queue.heap
    while heap and heap[0][0] <= until:
        now, kind, _, payload, version = heapq.heappop(heap)
        if kind == EventKind.ROUTER_TIMER:
            cluster.on_timer(now)
            continue
        assert isinstance(payload, Instance)
        if kind == EventKind.ITERATION:
            cluster.on_boundary(now, payload, version)
        elif kind == EventKind.INSTANCE_READY:
            cluster.on_ready(payload, now)
        elif kind == EventKind.DRAIN_DEADLINE:
            cluster.on_drain_deadline(payload, now)
