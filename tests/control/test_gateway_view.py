"""Behind a gateway: a new Deployment starts at the role's max batch size (a ceiling), the
gateway's first cap is the initial size, and the global controller judges pods at their caps."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from chiron_operator.control import chiron
from chiron_operator.control.fast_path import first_target, gateway_view
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import BatchQueue, PodSignals, PoolSnapshot, RoleSnapshot
from chiron_operator.core.state import ChironState, LocalState
from chiron_operator.core.tuning import PoolTuning, RoleBounds
from tests.control.test_global_scaling import BAND_TUNING
from tests.control.test_global_scaling import TUNING as PINNED

BOUNDS = RoleBounds(min_batch_size_seqs=1, max_batch_size_seqs=256, initial_batch_size_seqs=32)


def test_a_new_deployment_starts_at_the_ceiling_only_behind_a_gateway() -> None:
    assert BOUNDS.deployment_seqs(True) == 256
    assert BOUNDS.deployment_seqs(False) == 32
    defaults = PoolTuning()
    for role in Role:
        bounds = defaults.role_bounds(role)
        assert bounds.deployment_seqs(True) == bounds.max_batch_size_seqs
        assert bounds.deployment_seqs(False) == bounds.initial_batch_size_seqs


@pytest.mark.parametrize(
    ("state", "applied", "expected"),
    [
        (LocalState(), 256, 32),  # at the ceiling: the gateway caps at the initial size
        (LocalState(), 16, 16),  # a ceiling below the initial size: the pods run the ceiling
        (LocalState(target_max_num_seqs=100), 256, 100),  # a target already chosen stands
        (LocalState(target_max_num_seqs=100), 16, 100),  # ... even above the ceiling
    ],
)
def test_the_first_target_is_seeded_once(state: LocalState, applied: int, expected: int) -> None:
    seeded = first_target(state, applied, BOUNDS)
    assert seeded.target_max_num_seqs == expected
    assert dataclasses.replace(seeded, target_max_num_seqs=state.target_max_num_seqs) == state


def signals(name: str, role: Role, seqs: int, running: float = 30.0) -> PodSignals:
    return PodSignals(
        name=name,
        role=role,
        ready=True,
        max_num_seqs=seqs,
        running_requests=running,
        waiting_requests=0.0,
        interactive_running_requests=running,
        interactive_waiting_requests=0.0,
        sample_age_s=5.0,
    )


def pool(ceiling: int = 256, running: float = 30.0) -> PoolSnapshot:
    """Two interactive pods at the ceiling running `running` each; no mixed or batch pod."""
    pods = tuple(signals(f"i{i}", Role.INTERACTIVE, ceiling, running) for i in range(2))
    roles = {
        Role.INTERACTIVE: RoleSnapshot(Role.INTERACTIVE, 2, 2, 0, ceiling, pods),
        Role.MIXED: RoleSnapshot(Role.MIXED, 0, 0, 0, 256),
        Role.BATCH: RoleSnapshot(Role.BATCH, 0, 0, 0, 1024),
    }
    return PoolSnapshot(0.0, roles, BatchQueue((), sample_age_s=1.0), metrics_age_s=5.0)


def test_the_gateway_view_replaces_each_pods_batch_size_by_its_roles_cap() -> None:
    interactive = (
        signals("high", Role.INTERACTIVE, 256),
        signals("low", Role.INTERACTIVE, 10),  # a pod below the cap runs its own size
        signals("unknown", Role.INTERACTIVE, 0),  # no size reported: the cap
    )
    mixed = (signals("m", Role.MIXED, 64),)
    snap = dataclasses.replace(
        pool(),
        roles={
            Role.INTERACTIVE: RoleSnapshot(Role.INTERACTIVE, 3, 3, 0, 256, interactive),
            Role.MIXED: RoleSnapshot(Role.MIXED, 1, 1, 0, 64, mixed),
        },
    )
    view = gateway_view(snap, {Role.INTERACTIVE: 20})
    capped = view.role(Role.INTERACTIVE)
    assert [p.max_num_seqs for p in capped.pods] == [20, 10, 20]
    # Only the cap changes: the role's own ceiling and every other signal stay as scraped.
    assert capped.max_num_seqs == 256
    assert [dataclasses.replace(p, max_num_seqs=0) for p in capped.pods] == [
        dataclasses.replace(p, max_num_seqs=0) for p in interactive
    ]
    assert view.role(Role.MIXED) == snap.role(Role.MIXED)  # no cap given: untouched
    assert [p.max_num_seqs for p in gateway_view(snap, {Role.MIXED: 0}).role(Role.MIXED).pods] == [
        1
    ]


def test_the_global_controller_judges_pods_at_the_gateways_cap() -> None:
    # 30 running on pods at a 256 ceiling: 30 / (0.6 x 256) = 0.2 busy each without a gateway,
    # so the pool is idle and scales in. Behind the gateway the pods are capped at the initial
    # 32: 30 / (0.6 x 32) = 1.56 each, busy, and mixed instances are added.
    band = BAND_TUNING.global_scaling
    fast_tuning = PoolTuning(fast_path=True, global_scaling=band)
    fast, _ = chiron.decide(pool(), fast_tuning, chiron.initial_state())
    slow, _ = chiron.decide(pool(), BAND_TUNING, chiron.initial_state())
    assert fast.observations["busy_instances"] == pytest.approx(2 * 30 / (0.6 * 32))
    assert slow.observations["busy_instances"] == pytest.approx(2 * 30 / (0.6 * 256))
    assert fast.roles[Role.MIXED].replicas.reason is Reason.INTERACTIVE_BACKPRESSURE_HIGH
    assert fast.replicas(Role.MIXED) > 0
    # (the guard rails' stabilisation window holds the scale-in it proposes)
    assert (
        "(was: interactive backpressure 0.20 < 0.30"
        in slow.roles[Role.INTERACTIVE].replicas.message
    )
    assert slow.replicas(Role.MIXED) == 0


def test_the_view_follows_the_local_controllers_target() -> None:
    # The gateway caps at the last target (64), under the ceiling: 30 / 38.4 each, in band.
    state = ChironState(local={Role.INTERACTIVE: LocalState(target_max_num_seqs=64)})
    gateway = replace(PINNED, fast_path=True)  # the busy level 0.6 the figures are worked for
    decision, _ = chiron.decide(pool(), gateway, state)
    assert decision.observations["busy_instances"] == pytest.approx(2 * 30 / (0.6 * 64))
    assert decision.roles[Role.MIXED].replicas.reason is Reason.INTERACTIVE_BACKPRESSURE_IN_BAND
    # A target above the ceiling runs the ceiling: pods at 24 are judged at 24, not 64.
    low_ceiling, _ = chiron.decide(pool(24, 12.0), gateway, state)
    assert low_ceiling.observations["busy_instances"] == pytest.approx(2 * 12 / (0.6 * 24))
