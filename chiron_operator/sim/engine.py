"""The event loop: arrivals, pod iterations, scrapes, control ticks and actuations.

`simulate(config, workload, policy)` is the one entry point. It drives any `BoundPolicy`
(Chiron's or a baseline's) exactly as the operator does: every `control_interval_s` (first at
one interval) the policy gets a PoolSnapshot built from delayed scrapes (`observe`) and returns
a PoolDecision, applied `actuation_delay_s` later by the cluster (`cluster`): the role's
--max-num-seqs first (a surge restart), then its replica count; each role's target batch size
reaches the router at the same time (the pool's gateway caps pods at it: the local controller's
fast path). Arrivals are routed (`router`: the gateway's routing core, plain Services or the
baselines' join-shortest-queue) to pods (`instance`), whose iteration boundaries are the bulk of
the events.

The run stops at `horizon_s`; requests still queued or running then are dropped as
"unfinished", and workload arrivals after it as "after_horizon"; a request the router refused
carries its reason. So every request ends with a record. Nothing here is global: a run owns its
queue, cluster, observer and Generators.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from heapq import heappop, heappush, heapreplace
from operator import attrgetter
from typing import Any

import numpy as np

from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.decision import PoolDecision
from chiron_operator.core.enums import Role
from chiron_operator.sim.cluster import Cluster
from chiron_operator.sim.config import SimConfig, StepMode, cold_start_fn
from chiron_operator.sim.events import Event, EventKind, EventQueue
from chiron_operator.sim.instance import Instance, InstanceState
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.observe import Observer
from chiron_operator.sim.records import (
    AFTER_HORIZON,
    EXCEEDS_KV_CAPACITY,
    LOST,
    UNFINISHED,
    RequestRecord,
    RunCounters,
    Summary,
    TickRecord,
    request_records,
    summarise,
)
from chiron_operator.sim.requests import RequestSpec

_INF = math.inf


def _no_arrival_events(_now: float, _payload: object, _version: int) -> None:
    raise AssertionError("arrivals are read from the request list, never queued")


@dataclass(frozen=True)
class SimResult:
    """A finished run: its configuration, records, summary and cost of simulating it.

    `requests` follow the workload's arrival order; `ticks` one per control tick;
    `final_state` is the policy's state after the last tick; `events` counts processed events
    and `wall_s` the wall time of `simulate`.
    """

    config: SimConfig
    policy_name: str
    requests: tuple[RequestRecord, ...]
    ticks: tuple[TickRecord, ...]
    summary: Summary
    final_state: Any
    events: int
    wall_s: float


def _decided_max_num_seqs(decision: PoolDecision, role: Role, cluster: Cluster) -> int:
    found = decision.roles.get(role)
    return found.max_num_seqs.value if found is not None else cluster.max_num_seqs[role]


def simulate(
    config: SimConfig,
    workload: Sequence[RequestSpec],
    policy: BoundPolicy[Any, Any],
    *,
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Run `workload` through a pool controlled by `policy` until `config.horizon_s`.

    `progress`, if given, is called with the simulated time at every control tick (for a
    progress bar); it must not touch the run.
    """
    started = time.perf_counter()
    # The loop allocates millions of short-lived tuples, freed by reference counting; the
    # cyclic collector would only rescan the run's long-lived objects (requests, pods) over and
    # over. Any cycles the run leaves are collected once it is over.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _Engine(config, workload, policy, progress).run(started)
    finally:
        if collecting:
            gc.enable()


class _Engine:
    def __init__(
        self,
        config: SimConfig,
        workload: Sequence[RequestSpec],
        policy: BoundPolicy[Any, Any],
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self.progress = progress
        self.state: Any = policy.initial_state
        # One Generator per stochastic component: cold starts, then the Services' random
        # choices (a spawned child depends only on its index, so adding one kept the first's).
        cold_start_seed, routing_seed = np.random.SeedSequence(config.seed).spawn(2)
        self.queue = EventQueue()
        self.cluster = Cluster(
            self.queue,
            config.latency,
            routing=config.routing,
            cold_start_s=cold_start_fn(config.cold_start),
            rng=np.random.default_rng(cold_start_seed),
            routing_rng=np.random.default_rng(routing_seed),
            routing_tuning=config.routing_tuning,
            preempt_for_priority=config.preempt_for_priority,
            gpus_per_instance=config.tensor_parallel_size,
            drain_grace_s=config.drain_grace_s,
            deadline_bucket_s=config.deadline_bucket_s,
            exact=config.step_mode is StepMode.EXACT,
            max_num_batched_tokens=(
                config.max_num_batched_tokens if config.chunked_prefill else None
            ),
        )
        self.observer = Observer(
            scrape_interval_s=config.scrape_interval_s,
            scrape_delay_s=config.scrape_delay_s,
            window_s=config.window_s,
            quantile=config.slo.percentile_ratio,
            expose_class_split=config.expose_class_split,
        )
        default_deadline = config.slo.batch_deadline_s
        ordered = sorted(workload, key=attrgetter("arrival_s", "request_id"))  # C, not a lambda
        self.requests = [LiveRequest(spec, default_deadline) for spec in ordered]
        self.ticks: list[TickRecord] = []
        self.kv_capacity_tokens = config.latency.kv_capacity_tokens
        self.arrived = self.dropped = self.arrived_at_last_tick = 0
        self.scaling_actions = self.restarts = self.events = 0

    def run(self, started: float) -> SimResult:
        config, queue = self.config, self.queue
        self.cluster.bootstrap(dict(config.initial_replicas), dict(config.initial_max_num_seqs))
        queue.push(0.0, EventKind.SCRAPE)
        queue.push(config.control_interval_s, EventKind.CONTROL_TICK)
        by_kind: dict[EventKind, Callable[[float, Any, int], None]] = {
            EventKind.INSTANCE_READY: self._on_ready,
            EventKind.ACTUATION: self._on_actuation,
            EventKind.ARRIVAL: _no_arrival_events,
            EventKind.ITERATION: self.cluster.on_boundary,
            EventKind.DRAIN_DEADLINE: self._on_drain_deadline,
            EventKind.ROUTER_TIMER: self._on_router_timer,
            EventKind.SCRAPE: self._on_scrape,
            EventKind.CONTROL_TICK: self._on_tick,
        }
        handlers = [by_kind[kind] for kind in sorted(EventKind)]  # indexed by kind
        self.events = self._loop(handlers)
        return self._result(time.perf_counter() - started)

    def _loop(self, handlers: list[Callable[[float, Any, int], None]]) -> int:
        """Process events in (time, kind, sequence) order up to the horizon; returns how many.

        Arrivals come from the sorted request list rather than the heap (one comparison instead
        of a push and a pop each); an arrival goes first at a tie unless the heap's event has a
        lower kind, which is exactly the heap's order (no other arrival can be in the heap).
        """
        horizon = self.config.horizon_s
        heap = self.queue.heap
        boundary: Callable[[float, Any, int], Event | None] = self.cluster.boundary
        requests = self.requests
        submit = self.cluster.router.submit
        kv_capacity_tokens = self.kv_capacity_tokens
        arrival_kind, iteration_kind = EventKind.ARRIVAL, EventKind.ITERATION
        index, last = 0, len(requests)
        next_arrival_s = requests[0].arrival_s if requests else _INF
        events = 0
        # A sentinel after the horizon keeps the heap non-empty (no emptiness test per event).
        heappush(heap, (_INF, EventKind.CONTROL_TICK, 0, None, 0))
        while True:
            top = heap[0]
            if next_arrival_s < top[0] or (next_arrival_s == top[0] and top[1] > arrival_kind):
                if next_arrival_s > horizon:
                    return events
                # `_on_arrival`, inlined: once per request.
                request = requests[index]
                self.arrived += 1
                if request.prompt_tokens + request.output_tokens > kv_capacity_tokens:
                    self._drop(request, EXCEEDS_KV_CAPACITY)
                else:
                    submit(request, next_arrival_s)
                index += 1
                next_arrival_s = requests[index].arrival_s if index < last else _INF
            else:
                now, kind, _, payload, version = top
                if now > horizon:
                    return events
                if kind is iteration_kind:
                    # Most events. `Cluster.boundary` pushes nothing, so the event is still the
                    # root: one sift replaces it with the pod's next boundary (a pop and a push
                    # would take two; the order of events is the same, keys being unique).
                    event = boundary(now, payload, version)
                    if event is None:
                        heappop(heap)
                    else:
                        heapreplace(heap, event)
                else:
                    heappop(heap)
                    handlers[kind](now, payload, version)
            events += 1

    # -- handlers -----------------------------------------------------------------------------

    def _drop(self, request: LiveRequest, reason: str) -> None:
        request.drop_reason = reason
        self.dropped += 1

    def _on_ready(self, now: float, pod: Instance, _version: int) -> None:
        self.cluster.on_ready(pod, now)

    def _on_drain_deadline(self, now: float, pod: Instance, _version: int) -> None:
        self.cluster.on_drain_deadline(pod, now)

    def _on_router_timer(self, now: float, _payload: None, _version: int) -> None:
        self.cluster.on_timer(now)

    def _on_scrape(self, now: float, _payload: None, _version: int) -> None:
        cluster = self.cluster
        cluster.advance_all(now)
        router = cluster.router
        self.observer.scrape(
            now,
            cluster.instances,
            router.queued_by_deadline(),
            cluster.output_lengths,
            router.pod_signals,
        )
        self.queue.push(now + self.config.scrape_interval_s, EventKind.SCRAPE)

    def _on_tick(self, now: float, _payload: None, _version: int) -> None:
        snapshot = self.observer.snapshot(now, self.cluster)
        decision, self.state = self.policy.step(snapshot, self.state)
        self.ticks.append(self._tick_record(now, decision))
        self.queue.push(now + self.config.actuation_delay_s, EventKind.ACTUATION, decision)
        self.queue.push(now + self.config.control_interval_s, EventKind.CONTROL_TICK)
        if self.progress is not None:
            self.progress(now)

    def _on_actuation(self, now: float, decision: PoolDecision, _version: int) -> None:
        cluster = self.cluster
        targets = {role: found.target_max_num_seqs for role, found in decision.roles.items()}
        cluster.set_targets(targets, now)
        for role, role_decision in decision.roles.items():
            max_num_seqs = role_decision.max_num_seqs.value
            if cluster.set_max_num_seqs(role, max_num_seqs, now):
                self.restarts += 1  # a rollout that restarted pods
            if cluster.scale(role, role_decision.replicas.value, now):
                self.scaling_actions += 1

    # -- records ------------------------------------------------------------------------------

    def _tick_record(self, now: float, decision: PoolDecision) -> TickRecord:
        cluster = self.cluster
        interval = self.config.control_interval_s
        arrivals = self.arrived - self.arrived_at_last_tick
        self.arrived_at_last_tick = self.arrived
        ready = {r: len(cluster.ready[r]) for r in Role}
        reasons: dict[str, str] = {}
        for role, found in decision.roles.items():
            reasons[f"{role.value}.replicas"] = found.replicas.reason.value
            reasons[f"{role.value}.max_num_seqs"] = found.max_num_seqs.reason.value
        return TickRecord(
            time_s=now,
            arrivals_per_s=arrivals / interval,
            in_system=self.arrived - self.dropped - cluster.refused - cluster.completed,
            desired={
                r: decision.replicas(r) if r in decision.roles else len(cluster.members[r])
                for r in Role
            },
            ready=ready,
            starting={r: len(cluster.members[r]) - ready[r] for r in Role},
            max_num_seqs={r: _decided_max_num_seqs(decision, r, cluster) for r in Role},
            running={r: sum(p.n_running for p in cluster.ready[r]) for r in Role},
            pool_queue=cluster.router.pool_queued,
            batch_queue=cluster.router.batch_queued,
            waiting_on_pods=sum(
                p.n_waiting for p in cluster.instances if p.state is not InstanceState.TERMINATED
            ),
            observations=dict(decision.observations),
            reasons=reasons,
            targets={role: found.target_max_num_seqs for role, found in decision.roles.items()},
        )

    def _result(self, wall_s: float) -> SimResult:
        config = self.config
        horizon = config.horizon_s
        # Tokens emitted inside a fast-forwarded segment are accounted lazily: settle them.
        self.cluster.advance_all(horizon)
        located = {id(r) for r in (*self.cluster.in_flight(), *self.cluster.router.queued())}
        for request in self.requests:
            if request.drop_reason or request.completion_s <= horizon:
                continue
            if request.arrival_s > horizon:
                request.drop_reason = AFTER_HORIZON
            else:
                # Anything neither finished nor held somewhere was lost: a simulator bug that
                # the conservation test exists to catch.
                request.drop_reason = UNFINISHED if id(request) in located else LOST
        records = tuple(request_records(self.requests, config.slo))
        counters = RunCounters(
            horizon_s=horizon,
            gpu_seconds=self.cluster.gpu_seconds(horizon),
            scaling_actions=self.scaling_actions,
            restarts=self.restarts,
            pod_restarts=self.cluster.pod_restarts,
            requeues=self.cluster.requeued,
            cut_offs=self.cluster.cut_offs,
            window_s=config.control_interval_s,
        )
        return SimResult(
            config=config,
            policy_name=self.policy.name,
            requests=records,
            ticks=tuple(self.ticks),
            summary=summarise(records, counters, config.slo),
            final_state=self.state,
            events=self.events,
            wall_s=wall_s,
        )
