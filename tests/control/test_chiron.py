"""The composed Chiron policy: closed-loop scenarios and properties over the whole tick."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.control import chiron
from chiron_operator.core.decision import PoolDecision
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.state import ChironState, from_wire, to_wire
from chiron_operator.core.tuning import PoolTuning, RoleBounds
from tests.control.fluid import FluidPool
from tests.control.test_global_scaling import BAND_TUNING
from tests.control.test_global_scaling import TUNING as PINNED

TICK_S = 15.0
TUNING = PoolTuning()


def run_loop(
    pool: FluidPool, ticks: int, tuning: PoolTuning = TUNING, start_s: float = 0.0
) -> tuple[list[PoolDecision], ChironState]:
    """Drive the policy against the fluid pool, applying every decision at once."""
    state = chiron.initial_state()
    decisions = []
    for tick in range(ticks):
        decision, state = chiron.decide(pool.snapshot(start_s + tick * TICK_S), tuning, state)
        decisions.append(decision)
        for role, role_decision in decision.roles.items():
            pool.replicas[role] = role_decision.replicas.value
            pool.max_num_seqs[role] = role_decision.max_num_seqs.value
    return decisions, state


def fresh_pool(load_seqs: float, **kwargs: float) -> FluidPool:
    return FluidPool(
        interactive_load_seqs=load_seqs,
        replicas={Role.INTERACTIVE: 1, Role.MIXED: 0, Role.BATCH: 0},
        max_num_seqs={Role.INTERACTIVE: 32, Role.MIXED: 64, Role.BATCH: 256},
        **kwargs,  # type: ignore[arg-type]
    )


def test_rising_interactive_load_adds_mixed_instances() -> None:
    pool = fresh_pool(200.0)
    decisions, _ = run_loop(pool, 3)
    first = decisions[0].roles[Role.MIXED].replicas
    assert first.value > 0
    assert first.reason is Reason.INTERACTIVE_BACKPRESSURE_HIGH or "backpressure" in first.message


def test_constant_load_settles_without_oscillation() -> None:
    pool = fresh_pool(150.0)
    decisions, _ = run_loop(pool, 200)
    tail = [tuple(d.replicas(r) for r in Role) for d in decisions[-60:]]
    assert len(set(tail)) == 1, f"replicas still moving in the last 60 ticks: {set(tail)}"
    batch_sizes = [tuple(d.roles[r].max_num_seqs.value for r in d.roles) for d in decisions[-60:]]
    assert len(set(batch_sizes)) == 1, f"batch sizes still moving: {set(batch_sizes)}"


def test_load_drop_scales_down_only_after_stabilisation() -> None:
    pool = fresh_pool(300.0)
    run_loop(pool, 60)
    peak = sum(pool.replicas.values())
    pool.interactive_load_seqs = 10.0
    window_ticks = int(TUNING.guards.scale_down_stabilization_s // TICK_S)
    early, _ = run_loop(pool, window_ticks - 1, start_s=60 * TICK_S)
    assert all(sum(d.replicas(r) for r in Role) == peak for d in early)
    run_loop(pool, 200, start_s=(60 + window_ticks) * TICK_S)
    assert sum(pool.replicas.values()) < peak


def test_stale_metrics_never_scale_down() -> None:
    pool = fresh_pool(5.0, sample_age_s=10 * TUNING.guards.metrics_staleness_s)
    pool.replicas = {Role.INTERACTIVE: 4, Role.MIXED: 3, Role.BATCH: 2}
    decisions, _ = run_loop(pool, 100)
    for decision in decisions:
        for role, expected in ((Role.INTERACTIVE, 4), (Role.MIXED, 3), (Role.BATCH, 2)):
            assert decision.replicas(role) >= expected
            assert decision.roles[role].replicas.reason in {
                Reason.METRICS_STALE,
                Reason.METRICS_MISSING,
            }


def test_state_survives_a_round_trip_through_status() -> None:
    pool = fresh_pool(120.0)
    _, state = run_loop(pool, 30)
    assert from_wire(ChironState, to_wire(state)) == state


def test_batch_backlog_at_risk_adds_batch_instances() -> None:
    pool = fresh_pool(10.0)
    pool.batch_queued_requests = 200_000
    pool.batch_deadline_s = 1800.0
    decisions, _ = run_loop(pool, 20)
    assert max(d.replicas(Role.BATCH) for d in decisions) > 0


loads = st.floats(min_value=0.0, max_value=2000.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(low=loads, extra=st.floats(min_value=0.0, max_value=2000.0))
def test_more_load_never_yields_fewer_replicas(low: float, extra: float) -> None:
    def total(load: float) -> int:
        pool = fresh_pool(load)
        pool.replicas = {Role.INTERACTIVE: 2, Role.MIXED: 2, Role.BATCH: 0}
        decision, _ = chiron.decide(pool.snapshot(0.0), TUNING, chiron.initial_state())
        return sum(decision.replicas(r) for r in Role)

    assert total(low + extra) >= total(low)


bounds_st = st.builds(
    lambda lo, span, bmin, bspan: RoleBounds(
        min_replicas=lo,
        max_replicas=lo + span,
        min_batch_size_seqs=bmin,
        max_batch_size_seqs=bmin + bspan,
        initial_batch_size_seqs=bmin,
    ),
    st.integers(0, 3),
    st.integers(1, 6),
    st.integers(1, 16),
    st.integers(0, 512),
)


@settings(max_examples=60, deadline=None)
@given(
    interactive=bounds_st,
    mixed=bounds_st,
    batch=bounds_st,
    load=loads,
    age_s=st.sampled_from([1.0, 30.0, 500.0, math.inf]),
    backlog=st.integers(0, 100_000),
)
def test_outputs_always_within_bounds(
    interactive: RoleBounds,
    mixed: RoleBounds,
    batch: RoleBounds,
    load: float,
    age_s: float,
    backlog: int,
) -> None:
    tuning = PoolTuning(
        bounds={Role.INTERACTIVE: interactive, Role.MIXED: mixed, Role.BATCH: batch}
    )
    pool = fresh_pool(load, sample_age_s=age_s)
    pool.replicas = {Role.INTERACTIVE: 9, Role.MIXED: 0, Role.BATCH: 3}
    pool.batch_queued_requests = backlog
    decisions, _ = run_loop(pool, 8, tuning)
    for decision in decisions:
        for role, role_decision in decision.roles.items():
            b = tuning.role_bounds(role)
            assert b.min_replicas <= role_decision.replicas.value <= b.max_replicas
            assert b.min_batch_size_seqs <= role_decision.target_max_num_seqs
            assert role_decision.target_max_num_seqs <= b.max_batch_size_seqs
            applied = role_decision.max_num_seqs.value
            assert b.min_batch_size_seqs <= applied <= b.max_batch_size_seqs


def test_cold_start_does_not_add_again_every_tick() -> None:
    """Pods requested but still starting count: a 60 s cold start must not compound scale-outs."""
    pool = fresh_pool(400.0)
    # Pinned knobs: the first scale-out fits in one step, so the second tick is judged by what
    # is pending, not by the step limit's cooldown.
    first, state = chiron.decide(pool.snapshot(0.0), PINNED, chiron.initial_state())
    added = first.replicas(Role.MIXED)
    assert added > 0
    # The Deployment now asks for the added pods, but none is ready or sampled yet.
    pool.replicas = {Role.INTERACTIVE: 1, Role.MIXED: 0, Role.BATCH: 0}
    snapshot = pool.snapshot(TICK_S)
    roles = dict(snapshot.roles)
    mixed = roles[Role.MIXED]
    roles[Role.MIXED] = type(mixed)(Role.MIXED, added, 0, added, mixed.max_num_seqs, ())
    second, _ = chiron.decide(
        type(snapshot)(TICK_S, roles, snapshot.batch_queue, 5.0), PINNED, state
    )
    assert second.replicas(Role.MIXED) == added
    assert second.roles[Role.MIXED].replicas.reason is Reason.PENDING_CAPACITY


def test_scale_in_accounts_for_the_load_the_survivors_absorb() -> None:
    """Just under the band, the load spread over one instance fewer would sit past the band's
    middle: both instances are needed, hold."""
    # 7.5 sequences per pod: 7.5 / 19.2 + 7.5 / 38.4 = 0.59 busy, IBP 0.29 < 0.3, and
    # ceil(0.59 / 0.55) = 2 instances carry it.
    pool = fresh_pool(15.0)
    pool.replicas = {Role.INTERACTIVE: 1, Role.MIXED: 1, Role.BATCH: 0}
    decision, _ = chiron.decide(pool.snapshot(0.0), BAND_TUNING, chiron.initial_state())
    verdict = decision.roles[Role.MIXED].replicas
    assert decision.replicas(Role.MIXED) == 1, verdict.message
    assert verdict.reason is Reason.INTERACTIVE_BACKPRESSURE_LOW
    assert "but all 2 are needed" in verdict.message


def test_scale_in_stops_where_the_survivors_stay_in_band() -> None:
    # 8 sequences per pod over 1 interactive and 4 mixed: 1.25 busy, IBP 0.25. Three instances
    # carry it at the band's middle; the loop scales in and never scales back out.
    pool = fresh_pool(40.0)
    pool.replicas = {Role.INTERACTIVE: 1, Role.MIXED: 4, Role.BATCH: 0}
    decisions, _ = run_loop(pool, 80, BAND_TUNING)
    totals = [sum(d.replicas(r) for r in Role) for d in decisions]
    assert totals[0] == 5 and totals[-1] < 5
    assert all(later <= earlier for earlier, later in itertools.pairwise(totals))
    final = decisions[-1]
    band = BAND_TUNING.global_scaling
    low, high = band.ibp_low_ratio, band.ibp_high_ratio
    assert low <= final.observations["interactive_backpressure_ratio"] <= high
    assert final.roles[Role.MIXED].replicas.reason is Reason.INTERACTIVE_BACKPRESSURE_IN_BAND
