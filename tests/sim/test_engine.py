"""The engine end to end: a golden scenario, determinism, scaling, restarts, routing, scrapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.core.snapshot import PoolSnapshot
from chiron_operator.routing import RoutingTuning
from chiron_operator.sim.cluster import Cluster
from chiron_operator.sim.config import SimConfig, StepMode
from chiron_operator.sim.engine import SimResult, simulate
from chiron_operator.sim.events import EventQueue
from chiron_operator.sim.instance import InstanceState
from chiron_operator.sim.requests import RequestSpec
from chiron_operator.sim.router import RoutingMode
from tests.sim.simkit import H100_LIKE, SIMPLE, Seen, drive_cluster, fixed_policy, live, spec
from tests.sim.simkit import scripted_policy as scripted

BATCH = RequestClass.BATCH
READY = InstanceState.READY
INT, MIX, BAT = Role.INTERACTIVE, Role.MIXED, Role.BATCH


def snapshots(result: SimResult) -> tuple[PoolSnapshot, ...]:
    state = result.final_state
    assert isinstance(state, Seen)
    return state.snapshots


@pytest.mark.parametrize("mode", list(StepMode))
def test_golden_one_pod_three_requests(mode: StepMode) -> None:
    # decode step 10 ms + 1 ms/seq; prefill 20 ms + 0.1 ms/token.
    # t=0      r0 (100 prompt, 3 out) starts: prefill 30 ms -> first token 0.030.
    # t=0.005  r1 (100, 2) arrives mid-prefill, admitted at the 0.030 boundary: that iteration
    #          is r0's decode step (11 ms) + r1's prefill (30 ms) -> 0.071: r0's 2nd token, r1's
    #          first. Then one 2-sequence step (12 ms) completes both at 0.083.
    # t=0.100  r2 (50, 1) on the idle pod: prefill 25 ms, first and last token at 0.125.
    workload = [spec(0, 0.0, 100, 3), spec(1, 0.005, 100, 2), spec(2, 0.1, 50, 1)]
    config = SimConfig(
        SIMPLE, 30.0, 10.0, initial_replicas={INT: 1}, initial_max_num_seqs={INT: 8}, step_mode=mode
    )
    result = simulate(config, workload, fixed_policy({INT: (1, 8)}))
    r0, r1, r2 = result.requests
    assert (r0.first_token_s, r0.completion_s) == pytest.approx((0.030, 0.083))
    assert (r1.ttft_s, r1.completion_s) == pytest.approx((0.066, 0.083))
    assert r0.mean_itl_s == pytest.approx((0.083 - 0.030) / 2)
    assert r1.mean_itl_s == pytest.approx(0.012)
    assert (r2.ttft_s, r2.completion_s, r2.mean_itl_s) == pytest.approx((0.025, 0.125, 0.0))
    assert all(r.met_slo for r in result.requests)
    assert result.summary.gpu_hours == pytest.approx(10.0 / 3600.0)


def _busy_workload(seed: int, n: int = 400) -> list[RequestSpec]:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(0.05, n))
    return [
        spec(
            i,
            float(t),
            int(rng.integers(20, 2000)),
            int(rng.integers(1, 400)),
            BATCH if i % 3 == 0 else RequestClass.INTERACTIVE,
            float(t) + 120.0 if i % 3 == 0 else None,
        )
        for i, t in enumerate(times)
    ]


def _scaling_plan(now: float) -> dict[Role, tuple[int, int]]:
    up = 1 if now >= 30 else 0
    return {INT: (1 + up, 16), MIX: (1, 32 if now < 60 else 48), BAT: (up, 64)}


def _random_cold_start(rng: np.random.Generator) -> float:
    return float(rng.uniform(5.0, 40.0))


def test_same_seed_same_records_and_seed_matters() -> None:
    workload = _busy_workload(7)

    def run(seed: int) -> SimResult:
        config = SimConfig(
            H100_LIKE, _random_cold_start, 60.0, initial_replicas={INT: 1, MIX: 1}, seed=seed
        )
        return simulate(config, workload, scripted(_scaling_plan))

    a, b, c = run(3), run(3), run(4)
    assert repr(a.requests) == repr(b.requests)
    assert repr(a.ticks) == repr(b.ticks)
    assert a.summary == b.summary
    assert a.summary.gpu_hours != c.summary.gpu_hours  # cold starts are drawn from the seed


def test_cold_start_delays_readiness_and_costs_gpu_time() -> None:
    config = SimConfig(
        SIMPLE, 45.0, 120.0, initial_replicas={INT: 1}, initial_max_num_seqs={INT: 8}
    )
    result = simulate(config, [], scripted(lambda now: {INT: (2, 8)}))
    # Scaled up at the first tick (30 s): starting until 75 s.
    seen = {s.now_s: s.role(INT) for s in snapshots(result)}
    assert (seen[60.0].ready_replicas, seen[60.0].starting_replicas) == (1, 1)
    assert [p.ready for p in seen[60.0].pods] == [True, False]
    assert math.isnan(seen[60.0].pods[1].running_requests)  # a starting pod has no signals
    assert (seen[90.0].ready_replicas, seen[90.0].starting_replicas) == (2, 0)
    assert (result.summary.scaling_actions, result.summary.restarts) == (1, 0)
    assert result.summary.gpu_hours == pytest.approx((120.0 + 90.0) / 3600.0)


def _cluster(routing: RoutingMode = RoutingMode.CHIRON) -> tuple[Cluster, EventQueue]:
    queue = EventQueue()
    cluster = Cluster(
        queue,
        SIMPLE,
        routing=routing,
        cold_start_s=lambda _rng: 10.0,
        rng=np.random.default_rng(0),
        drain_grace_s=5.0,
    )
    return cluster, queue


def test_scale_down_drains_least_loaded_then_requeues_after_grace() -> None:
    # Uniform routing: requests are placed on chosen pods by hand, which the gateway (CHIRON)
    # would not allow; the drain itself is the cluster's, whatever the router (the gateway's
    # hand-backs: tests/sim/test_gateway_routing.py).
    cluster, queue = _cluster(RoutingMode.UNIFORM)
    cluster.bootstrap({INT: 3}, {INT: 8})
    pods = list(cluster.ready[INT])
    for pod, n in zip(pods, (3, 1, 2), strict=True):
        for k in range(n):
            cluster.dispatch(live(10 * pod.instance_id + k, 50, 5000), pod, 0.0)
    drive_cluster(cluster, queue, 1.0)
    cluster.scale(INT, 2, 1.0)
    drained = pods[1]
    assert [p.state for p in pods] == [READY, InstanceState.DRAINING, READY]
    assert cluster.ready[INT] == [pods[0], pods[2]]
    drive_cluster(cluster, queue, 6.5)
    # Still running at the end of the 5 s grace: aborted, re-queued, GPU time stops.
    assert [p.state for p in pods] == [READY, InstanceState.TERMINATED, READY]
    assert drained.terminated_s == pytest.approx(6.0)
    assert cluster.requeued == 1
    assert sum(p.load for p in cluster.ready[INT]) == 6


def test_scale_down_prefers_starting_pods() -> None:
    cluster, _ = _cluster()
    cluster.bootstrap({INT: 1}, {INT: 8})
    cluster.scale(INT, 3, 0.0)
    cluster.scale(INT, 2, 1.0)
    states = [p.state for p in cluster.members[INT]]
    assert states == [InstanceState.READY, InstanceState.STARTING]
    assert cluster.instances[2].state is InstanceState.TERMINATED  # the newest starting pod


def test_restart_on_max_num_seqs_change_rolls_with_surge() -> None:
    workload = [spec(i, 0.5 * i, 200, 300) for i in range(200)]
    config = SimConfig(
        H100_LIKE, 45.0, 120.0, initial_replicas={INT: 2}, initial_max_num_seqs={INT: 8}
    )
    result = simulate(config, workload, scripted(lambda now: {INT: (2, 8 if now < 30 else 16)}))
    assert (result.summary.restarts, result.summary.pod_restarts) == (1, 2)
    seen = snapshots(result)
    # Never fewer ready pods than before: replacements start first, old pods drain after.
    assert min(s.role(INT).ready_replicas for s in seen) == 2
    during = next(s for s in seen if s.now_s == 30.0 + 30.0).role(INT)
    assert [p.max_num_seqs for p in during.pods] == [8, 8, 16, 16]
    after = seen[-1].role(INT)
    assert [p.max_num_seqs for p in after.pods] == [16, 16] and after.max_num_seqs == 16
    assert all(r.completed for r in result.requests if r.arrival_s < 60.0)
    # Old pods ran until their replacements were ready (75 s), replacements from 30 s.
    assert result.summary.gpu_hours >= (2 * 75.0 + 2 * 90.0) / 3600.0


def test_chiron_routing_overflows_to_mixed_and_batch_is_pulled_by_free_slots() -> None:
    cluster, _ = _cluster()
    cluster.bootstrap({INT: 1, MIX: 1, BAT: 1}, {INT: 2, MIX: 4, BAT: 2})
    (interactive,), (mixed,), (batch,) = cluster.ready[INT], cluster.ready[MIX], cluster.ready[BAT]
    router = cluster.router
    for k in range(3):
        router.submit(live(k, 10, 100), 0.0)
    assert (interactive.load, mixed.load) == (2, 1)  # the third overflowed to mixed
    for k in range(5):
        router.submit(live(10 + k, 10, 100, BATCH), 0.0)
    # Batch pod first (2 slots), then the mixed pod's free slots, two prefills at a time: the
    # fifth waits for a first token there.
    assert (batch.load, mixed.load, router.batch_queued) == (2, 3, 1)
    router.submit(live(20, 10, 100, BATCH), 0.0)
    assert router.batch_queued == 2
    assert interactive.load == 2  # batch never lands on full interactive pods


def test_batch_queue_is_earliest_deadline_first() -> None:
    cluster, queue = _cluster()
    cluster.bootstrap({BAT: 1}, {BAT: 1})
    requests = [live(k, 10, 3, BATCH) for k in range(4)]
    for request, deadline in zip(requests, [500.0, 100.0, 300.0, 200.0], strict=True):
        request.deadline_s = deadline
        cluster.router.submit(request, 0.0)
    # Grouped by deadline rounded down to the 10 s bucket (DEADLINE_BUCKET_S).
    queued = sorted(cluster.router.queued_by_deadline().items())
    assert queued == [(100.0, 1), (200.0, 1), (300.0, 1)]
    drive_cluster(cluster, queue, 10.0)
    assert cluster.completed == 4 and not cluster.router.queued_by_deadline()
    # The first went straight to the free pod; the rest by deadline.
    done = sorted(requests, key=lambda r: r.completion_s)
    assert [r.request_id for r in done] == [0, 1, 3, 2]


def test_uniform_routing_joins_shortest_queue_of_any_role() -> None:
    cluster, _ = _cluster(RoutingMode.UNIFORM)
    cluster.bootstrap({INT: 1, BAT: 1}, {INT: 8, BAT: 8})
    for k in range(4):
        cluster.router.submit(live(k, 10, 100, BATCH if k % 2 else RequestClass.INTERACTIVE), 0)
    assert [p.load for p in (*cluster.ready[INT], *cluster.ready[BAT])] == [2, 2]


@pytest.mark.parametrize(
    ("routing", "max_wait_s"), [(RoutingMode.UNIFORM, 30.0), (RoutingMode.CHIRON, 60.0)]
)
def test_interactive_waits_in_pool_queue_until_a_pod_is_ready(
    routing: RoutingMode, max_wait_s: float
) -> None:
    workload = [spec(0, 1.0, 100, 10)]
    config = SimConfig(
        SIMPLE,
        20.0,
        120.0,
        initial_replicas={INT: 0},
        initial_max_num_seqs={INT: 8},
        routing=routing,
        routing_tuning=RoutingTuning(max_queue_wait_s=max_wait_s),
    )
    result = simulate(config, workload, scripted(lambda now: {INT: (1, 8)}))
    (record,) = result.requests
    # Pod asked for at 30 s, ready at 50 s; TTFT counts from arrival.
    assert record.dispatch_s == pytest.approx(50.0)
    assert record.ttft_s == pytest.approx(49.0 + 0.030)
    assert result.ticks[0].pool_queue == 1


def test_the_gateway_refuses_what_waited_longer_than_its_limit() -> None:
    # As above, with the gateway's default 30 s wait: no interactive pod is ready at 31 s,
    # so the gateway answers 503 (NoReadyPod) and the request is a miss.
    workload = [spec(0, 1.0, 100, 10)]
    config = SimConfig(
        SIMPLE, 20.0, 120.0, initial_replicas={INT: 0}, initial_max_num_seqs={INT: 8}
    )
    result = simulate(config, workload, scripted(lambda now: {INT: (1, 8)}))
    (record,) = result.requests
    assert record.dropped_reason == "refused:NoReadyPod" and not record.met_slo
    assert math.isnan(record.dispatch_s)
    assert result.summary.dropped == {"refused:NoReadyPod": 1}
    assert (result.ticks[0].pool_queue, result.ticks[0].in_system) == (1, 1)
    assert (result.ticks[1].pool_queue, result.ticks[1].in_system) == (0, 0)


def test_snapshot_follows_delayed_scrapes() -> None:
    workload = [spec(i, 0.2 * i, 300, 200) for i in range(600)]
    config = SimConfig(
        H100_LIKE,
        30.0,
        120.0,
        initial_replicas={INT: 2},
        initial_max_num_seqs={INT: 32},
        scrape_interval_s=15.0,
        scrape_delay_s=5.0,
        window_s=60.0,
        expose_class_split=True,
    )
    result = simulate(config, workload, fixed_policy({INT: (2, 32)}))
    first, *_, last = snapshots(result)
    # At 30 s the newest visible scrape is from 15 s (30 s is too fresh by the 5 s delay).
    pod = first.role(INT).pods[0]
    assert pod.sample_age_s == pytest.approx(15.0)
    assert first.metrics_age_s == pytest.approx(15.0)
    assert pod.running_requests == pod.interactive_running_requests
    assert 0 < pod.kv_cache_usage_ratio < 1
    assert 0 < pod.itl_s < 0.05 and 0 < pod.ttft_s < 1.0
    # Together the pods stream 5 req/s * 200 tokens.
    rates = [p.generation_tokens_per_s for p in last.role(INT).pods]
    assert sum(rates) == pytest.approx(1000.0, rel=0.15)


@pytest.mark.parametrize("routing", [RoutingMode.UNIFORM, RoutingMode.SERVICES])
def test_class_split_hidden_unless_exposed(routing: RoutingMode) -> None:
    config = SimConfig(
        SIMPLE,
        30.0,
        60.0,
        initial_replicas={INT: 1},
        initial_max_num_seqs={INT: 8},
        routing=routing,
    )
    result = simulate(config, [spec(0, 1.0, 10, 10)], fixed_policy({INT: (1, 8)}))
    pod = snapshots(result)[0].role(INT).pods[0]
    assert pod.running_requests == 0.0
    assert math.isnan(pod.interactive_running_requests)


def test_the_gateway_tells_the_class_split_and_the_cap() -> None:
    # What the operator reads from the gateway: interactive requests in flight per pod (vLLM
    # cannot say) and the pod's cap, min(--max-num-seqs 8, the target 5 decided at 30 s).
    workload = [spec(i, 14.0, 10, 10_000) for i in range(7)]
    config = SimConfig(SIMPLE, 30.0, 61.0, initial_replicas={INT: 1}, initial_max_num_seqs={INT: 8})
    result = simulate(config, workload, scripted(lambda now: {INT: (1, 8, 5)}))
    first, second = (s.role(INT).pods[0] for s in snapshots(result))
    # The scrape at 15 s, before the target; then the one at 45 s, after it: the 7 requests in
    # flight stay (a lower cap takes nothing new, it evicts nothing).
    assert (first.interactive_running_requests, first.max_num_seqs) == (7.0, 8)
    assert (second.interactive_running_requests, second.max_num_seqs) == (7.0, 5)
    assert math.isnan(second.interactive_waiting_requests)


def test_tick_records_carry_decisions() -> None:
    config = SimConfig(SIMPLE, 30.0, 95.0, initial_replicas={INT: 1}, initial_max_num_seqs={INT: 8})
    result = simulate(config, [spec(0, 1.0, 10, 10)], fixed_policy({INT: (1, 8)}))
    assert [t.time_s for t in result.ticks] == [30.0, 60.0, 90.0]
    tick = result.ticks[0]
    assert tick.desired[INT] == 1 and tick.ready[INT] == 1 and tick.max_num_seqs[INT] == 8
    assert tick.reasons["interactive.replicas"] == "Static"
    assert tick.observations == {"ticks": 1.0}
    assert tick.arrivals_per_s == pytest.approx(1 / 30.0)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="horizon_s"):
        SimConfig(SIMPLE, 30.0, 0.0)
    with pytest.raises(ValueError, match="initial_max_num_seqs"):
        SimConfig(SIMPLE, 30.0, 10.0, initial_max_num_seqs={INT: 0})
