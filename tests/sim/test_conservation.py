"""Every request arrives once and either completes or is dropped with a reason, whatever the
policy does to the pods (scaling, drains, restarts) and however full their KV caches get."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.routing import RouteReason
from chiron_operator.sim.config import SimConfig, StepMode
from chiron_operator.sim.dispatcher import REFUSED
from chiron_operator.sim.engine import SimResult, simulate
from chiron_operator.sim.records import AFTER_HORIZON, EXCEEDS_KV_CAPACITY, UNFINISHED
from chiron_operator.sim.requests import RequestSpec
from chiron_operator.sim.router import RoutingMode
from chiron_operator.sim.services import NO_ENDPOINT
from tests.sim.simkit import Plan, scripted_policy, spec

INT, MIX, BAT = Role.INTERACTIVE, Role.MIXED, Role.BATCH
SMALL_KV = LatencyModel("small-kv", 6.0, 0.05, 0.0005, 5.0, 0.02, 1e-06, 3000)
REASONS = {UNFINISHED, AFTER_HORIZON, EXCEEDS_KV_CAPACITY}
# What the routers may answer instead of serving: the gateway's refusals, or no endpoint at all.
REFUSALS = {f"{REFUSED}:{reason.value}" for reason in RouteReason} | {NO_ENDPOINT}

Phase = tuple[int, int, int, int]  # interactive, mixed, batch replicas; max_num_seqs


def check_conservation(workload: list[RequestSpec], result: SimResult) -> None:
    horizon = result.config.horizon_s
    assert sorted(r.request_id for r in result.requests) == sorted(s.request_id for s in workload)
    for record in result.requests:
        if record.completed:
            assert record.arrival_s <= record.dispatch_s <= record.first_token_s
            assert record.first_token_s <= record.completion_s <= horizon
            assert record.mean_itl_s >= 0.0
        else:
            assert record.dropped_reason in REASONS | REFUSALS
            assert math.isnan(record.completion_s) and not record.met_slo
            assert (record.arrival_s > horizon) == (record.dropped_reason == AFTER_HORIZON)
    summary = result.summary
    assert summary.completed + sum(summary.dropped.values()) == summary.requests
    assert summary.requests == len(workload)


def _plan(phases: list[Phase]) -> Plan:
    def plan(now: float) -> dict[Role, tuple[int, int]]:
        i, m, b, seqs = phases[int(now // 10.0) % len(phases)]
        return {INT: (i, seqs), MIX: (m, 2 * seqs), BAT: (b, 4 * seqs)}

    return plan


def run_phases(
    workload: list[RequestSpec],
    phases: list[Phase],
    *,
    mode: StepMode = StepMode.FAST,
    routing: RoutingMode = RoutingMode.CHIRON,
    horizon_s: float = 90.0,
) -> SimResult:
    config = SimConfig(
        SMALL_KV,
        lambda rng: float(rng.uniform(1.0, 8.0)),
        horizon_s,
        initial_replicas={INT: 1, MIX: 1, BAT: 0},
        initial_max_num_seqs={INT: 4, MIX: 8, BAT: 16},
        routing=routing,
        step_mode=mode,
        control_interval_s=10.0,
        scrape_interval_s=5.0,
        scrape_delay_s=2.0,
        drain_grace_s=3.0,
    )
    return simulate(config, workload, scripted_policy(_plan(phases)))


def random_workload(seed: int, n: int) -> list[RequestSpec]:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0.0, 100.0, n))
    return [
        spec(
            i,
            float(t),
            int(rng.integers(1, 2600)),
            int(rng.integers(1, 900)),
            RequestClass.BATCH if rng.random() < 0.4 else RequestClass.INTERACTIVE,
            float(t + rng.uniform(10, 200)) if rng.random() < 0.5 else None,
        )
        for i, t in enumerate(times)
    ]


CHURN: list[Phase] = [(1, 1, 0, 4), (2, 0, 2, 2), (0, 2, 1, 8), (1, 1, 1, 4), (0, 0, 0, 4)]


@pytest.mark.parametrize("mode", list(StepMode))
@pytest.mark.parametrize("routing", list(RoutingMode))
def test_churning_pool_conserves_requests(mode: StepMode, routing: RoutingMode) -> None:
    workload = random_workload(11, 500)
    result = run_phases(workload, CHURN, mode=mode, routing=routing)
    check_conservation(workload, result)
    summary = result.summary
    # The scenario does exercise what could lose requests.
    assert summary.preemptions > 0 and summary.requeues > 0
    assert summary.restarts > 0 and summary.scaling_actions > 0
    assert REASONS <= set(summary.dropped) <= REASONS | REFUSALS
    assert 0 < summary.completed < summary.requests


def test_arrivals_after_horizon_are_dropped_as_such() -> None:
    workload = [spec(0, 1.0, 10, 10), spec(1, 200.0, 10, 10)]
    result = run_phases(workload, [(1, 0, 0, 4)], horizon_s=30.0)
    check_conservation(workload, result)
    assert [r.dropped_reason for r in result.requests] == ["", AFTER_HORIZON]


phase = st.tuples(
    st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.sampled_from([1, 2, 8])
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(0, 80),
    phases=st.lists(phase, min_size=1, max_size=5),
    mode=st.sampled_from(list(StepMode)),
    routing=st.sampled_from(list(RoutingMode)),
)
def test_random_pools_conserve_requests(
    seed: int, n: int, phases: list[Phase], mode: StepMode, routing: RoutingMode
) -> None:
    workload = random_workload(seed, n)
    check_conservation(workload, run_phases(workload, phases, mode=mode, routing=routing))
