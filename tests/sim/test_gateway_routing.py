"""The cluster carrying out the routers' decisions: the gateway's caps, cut-offs, refusals and
hand-backs (CHIRON), plain Services (SERVICES), and resends held until an abort takes effect."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.routing import RoutingTuning
from chiron_operator.sim.cluster import Cluster
from chiron_operator.sim.dispatcher import GatewayRouter
from chiron_operator.sim.events import EventQueue
from chiron_operator.sim.harness.policies import PolicySpec, setup
from chiron_operator.sim.instance import InstanceState
from chiron_operator.sim.router import RoutingMode
from chiron_operator.sim.scenario import load_scenario
from chiron_operator.sim.services import NO_ENDPOINT
from tests.sim.benchkit import TINY_MIXED
from tests.sim.simkit import SIMPLE, drive_cluster, live

BATCH = RequestClass.BATCH
INT, MIX, BAT = Role.INTERACTIVE, Role.MIXED, Role.BATCH


def make_cluster(
    routing: RoutingMode = RoutingMode.CHIRON,
    tuning: RoutingTuning | None = None,
    seed: int = 0,
) -> tuple[Cluster, EventQueue]:
    queue = EventQueue()
    cluster = Cluster(
        queue,
        SIMPLE,
        routing=routing,
        cold_start_s=lambda _rng: 10.0,
        rng=np.random.default_rng(0),
        routing_rng=np.random.default_rng(seed),
        routing_tuning=tuning,
        drain_grace_s=5.0,
    )
    return cluster, queue


def gateway(cluster: Cluster) -> GatewayRouter:
    assert isinstance(cluster.router, GatewayRouter)
    return cluster.router


def test_a_target_below_max_num_seqs_caps_the_pod_at_once() -> None:
    cluster, queue = make_cluster()
    cluster.bootstrap({INT: 1}, {INT: 8})
    (pod,) = cluster.ready[INT]
    cluster.set_targets({INT: 2}, 0.0)
    for k in range(4):
        cluster.router.submit(live(k, 10, 100), 0.0)
    # Two in flight (the target), two wait at the gateway although vLLM has 8 slots.
    assert (pod.load, cluster.router.pool_queued) == (2, 2)
    cluster.set_targets({INT: 8}, 0.1)
    assert (pod.load, cluster.router.pool_queued) == (4, 0)
    drive_cluster(cluster, queue, 5.0)
    assert cluster.completed == 4


def test_an_interactive_request_cuts_off_batch_work_on_a_full_mixed_pod() -> None:
    cluster, queue = make_cluster()
    cluster.bootstrap({INT: 1, MIX: 1}, {INT: 1, MIX: 2})
    (mixed,) = cluster.ready[MIX]
    busy = live(0, 10, 1000)
    old, new = live(1, 10, 1000, BATCH), live(2, 10, 1000, BATCH)
    for request in (busy, old, new):
        cluster.router.submit(request, 0.0)
    drive_cluster(cluster, queue, 0.2)
    assert list(mixed.running[1]) == [old, new]
    urgent = live(3, 10, 5)
    cluster.router.submit(urgent, 0.2)
    # The newest batch request is cut off (aborted at the end of the iteration in progress)
    # and queued again in its place; the interactive request has its slot.
    assert cluster.cut_offs == 1 and mixed.pending_abort(new)
    assert gateway(cluster).batch_queued == 1
    drive_cluster(cluster, queue, 0.3)
    assert urgent.first_token_s < 0.25 and urgent.completion_s < 0.3
    # Resent into the slot the urgent request freed, as the next of the batch queue.
    assert new.pod_dispatch_s == urgent.completion_s and gateway(cluster).batch_queued == 0
    assert mixed.counters.preemptions == 0
    drive_cluster(cluster, queue, 60.0)
    # Sent again once the urgent request finished, from scratch.
    assert new.completion_s > new.first_token_s > urgent.completion_s
    assert cluster.completed == 4


def test_a_mixed_pod_prefills_batch_requests_one_at_a_time_under_a_limit_of_one() -> None:
    """The simulated pods tell the gateway's router which batch requests the head they plan
    gives a first token, and the router paces batch prefills on mixed and interactive pods by
    it (`batch_prefills_per_pod`): the next request goes as that head is planned and waits in
    the pod's queue for it, so the prefills follow one another."""
    cluster, queue = make_cluster(tuning=RoutingTuning(batch_prefills_per_pod=1))
    cluster.bootstrap({MIX: 1}, {MIX: 8})
    backlog = [live(i, 2000, 20, BATCH) for i in range(3)]
    for request in backlog:
        cluster.router.submit(request, 0.0)
    assert gateway(cluster).batch_queued == 2  # room for 8, one prefill at a time
    drive_cluster(cluster, queue, 60.0)
    assert cluster.completed == 3
    first, second, third = backlog
    assert first.pod_dispatch_s == second.pod_dispatch_s == 0.0  # as the first head is planned
    assert third.pod_dispatch_s == first.first_token_s  # as the second one's head is
    assert 0.0 < first.first_token_s < second.first_token_s < third.first_token_s
    # Without the limit the pod takes all three at once, and prefills them in one head.
    cluster, queue = make_cluster(tuning=RoutingTuning(batch_prefills_per_pod=0))
    cluster.bootstrap({MIX: 1}, {MIX: 8})
    unpaced = [live(i, 2000, 20, BATCH) for i in range(3)]
    for request in unpaced:
        cluster.router.submit(request, 0.0)
    assert gateway(cluster).batch_queued == 0
    drive_cluster(cluster, queue, 60.0)
    assert len({r.first_token_s for r in unpaced}) == 1


def test_the_gateway_refuses_beyond_its_queue() -> None:
    cluster, queue = make_cluster(tuning=RoutingTuning(max_queued_interactive=1))
    cluster.bootstrap({INT: 1}, {INT: 1})
    first, waits, refused = live(0, 10, 5000), live(1, 10, 5), live(2, 10, 5)
    for request in (first, waits, refused):
        cluster.router.submit(request, 0.0)
    assert refused.drop_reason == "refused:QueueFull" and cluster.refused == 1
    assert not waits.drop_reason and cluster.router.pool_queued == 1
    # Still waiting when its 30 s run out: refused then, by the timer the gateway asked for.
    drive_cluster(cluster, queue, 31.0)
    assert waits.drop_reason == "refused:QueueWaitExceeded" and cluster.refused == 2
    assert cluster.router.queued() == []


def test_a_draining_pod_hands_back_as_the_gateway_does() -> None:
    cluster, queue = make_cluster()
    cluster.bootstrap({INT: 2, BAT: 2}, {INT: 8, BAT: 8})
    (kept_int, gone_int), (kept_bat, gone_bat) = cluster.ready[INT], cluster.ready[BAT]
    requests = [live(0, 10, 5000), live(1, 10, 5000), live(2, 10, 5000, BATCH)]
    requests.append(live(3, 10, 5000, BATCH))
    for request in requests:
        cluster.router.submit(request, 0.0)  # one per pod: the least loaded each time
    drive_cluster(cluster, queue, 1.0)
    cluster.scale(INT, 1, 1.0)
    cluster.scale(BAT, 1, 1.0)  # the newest of equals drain
    assert gone_int.state is gone_bat.state is InstanceState.DRAINING
    drive_cluster(cluster, queue, 6.0)  # the 5 s grace is over
    assert gone_int.state is gone_bat.state is InstanceState.TERMINATED
    assert cluster.requeued == 2
    # The interactive request is retried on the other pod with the tokens it streamed; the
    # batch request is put back in the queue and resent from scratch.
    moved_int, moved_bat = requests[1], requests[3]
    assert moved_int in kept_int.waiting[0] and moved_int.generated > 0
    assert moved_bat in kept_bat.waiting[0] and moved_bat.generated == 0
    drive_cluster(cluster, queue, 200.0)
    assert cluster.completed == 4 and cluster.router.queued() == []


def test_a_resend_waits_for_the_abort_to_take_effect() -> None:
    cluster, queue = make_cluster(RoutingMode.UNIFORM)
    cluster.bootstrap({MIX: 1, BAT: 1}, {MIX: 4, BAT: 4})
    (mixed,), (batch_pod,) = cluster.ready[MIX], cluster.ready[BAT]
    victim, other = live(1, 10, 1000, BATCH), live(2, 10, 1000, BATCH)
    cluster.dispatch(victim, mixed, 0.0)
    cluster.dispatch(other, mixed, 0.0)
    drive_cluster(cluster, queue, 0.2)
    cluster.cut_off(victim, mixed, 0.2)
    cluster.dispatch(victim, batch_pod, 0.2)
    # Still on the mixed pod until its iteration ends: not on two pods at once.
    assert batch_pod.load == 0 and mixed.pending_abort(victim)
    cut_s = mixed.scheduled_s
    drive_cluster(cluster, queue, cut_s)
    assert batch_pod.load == 1 and victim.pod_dispatch_s == cut_s
    drive_cluster(cluster, queue, 60.0)
    assert cluster.completed == 2 and victim.completion_s > cut_s


def test_a_held_resend_cut_off_again_goes_nowhere() -> None:
    cluster, queue = make_cluster(RoutingMode.UNIFORM)
    cluster.bootstrap({MIX: 1, BAT: 1}, {MIX: 4, BAT: 4})
    (mixed,), (batch_pod,) = cluster.ready[MIX], cluster.ready[BAT]
    victim = live(1, 10, 1000, BATCH)
    cluster.dispatch(victim, mixed, 0.0)
    drive_cluster(cluster, queue, 0.2)
    cluster.cut_off(victim, mixed, 0.2)
    cluster.dispatch(victim, batch_pod, 0.2)
    cluster.cut_off(victim, batch_pod, 0.2)
    drive_cluster(cluster, queue, 60.0)
    assert batch_pod.load == 0 and mixed.load == 0 and cluster.cut_offs == 2
    assert victim.running_on is None and cluster.completed == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_services_pick_a_random_ready_pod_of_the_class(seed: int) -> None:
    cluster, _ = make_cluster(RoutingMode.SERVICES, seed=seed)
    cluster.bootstrap({INT: 2, MIX: 1, BAT: 1}, {INT: 4, MIX: 4, BAT: 4})
    for k in range(300):
        cluster.router.submit(live(k, 10, 100, BATCH if k % 2 else RequestClass.INTERACTIVE), 0.0)
    where = Counter(
        (pod.role, r.request_class)
        for pod in cluster.instances
        for group in (*pod.running, *pod.waiting)
        for r in group
    )
    assert (INT, BATCH) not in where and (BAT, RequestClass.INTERACTIVE) not in where
    # 150 interactive over 3 endpoints, 150 batch over 2: near even, no cap, no pool queue.
    assert 30 <= where[MIX, RequestClass.INTERACTIVE] <= 70
    assert 50 <= where[BAT, BATCH] <= 100
    assert sum(where.values()) == 300 and cluster.router.pool_queued == 0
    mixed = cluster.ready[MIX][0]
    assert mixed.priority_scheduling and mixed.n_waiting > 0


def test_services_are_drawn_from_the_seed() -> None:
    def placement(seed: int) -> list[str]:
        cluster, _ = make_cluster(RoutingMode.SERVICES, seed=seed)
        cluster.bootstrap({INT: 3}, {INT: 4})
        requests = [live(k, 10, 100) for k in range(20)]
        for request in requests:
            cluster.router.submit(request, 0.0)
        return [next(p.name for p in cluster.instances if r in p.waiting[0]) for r in requests]

    assert placement(3) == placement(3) != placement(4)


def test_a_service_without_ready_endpoints_refuses() -> None:
    cluster, _ = make_cluster(RoutingMode.SERVICES)
    cluster.bootstrap({INT: 1}, {INT: 4})
    request = live(0, 10, 100, BATCH)
    cluster.router.submit(request, 0.0)
    assert request.drop_reason == NO_ENDPOINT and cluster.refused == 1


def test_chiron_runs_its_gateway_with_the_fast_path_and_chiron_services_neither() -> None:
    scenario = load_scenario(TINY_MIXED)
    gateway_setup = setup(scenario, PolicySpec("chiron"))
    services_setup = setup(scenario, PolicySpec("chiron-services"))
    assert gateway_setup.routing is RoutingMode.CHIRON
    assert gateway_setup.policy.tuning.fast_path and gateway_setup.policy.name == "chiron"
    assert services_setup.routing is RoutingMode.SERVICES
    assert not services_setup.policy.tuning.fast_path
    assert services_setup.policy.name == "chiron-services"
    # Everything else is the pool's own tuning, for both.
    assert gateway_setup.policy.tuning.bounds == services_setup.policy.tuning.bounds
