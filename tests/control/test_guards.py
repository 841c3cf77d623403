"""Guard rails: each stage in a table, their order, scenarios on a driven clock, properties."""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.control import guards
from chiron_operator.control.guards import (
    GuardContext,
    Stage,
    apply_guards,
    guard_context,
    metrics_problem,
)
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, RoleSnapshot
from chiron_operator.core.state import GuardState, from_wire, to_wire
from chiron_operator.core.tuning import GuardTuning, RoleBounds

NOW_S = 10_000.0
STALENESS_S = 60.0
TUNING = GuardTuning()  # up 4, down 1, cooldown 30 s, window 300 s, staleness 60 s
BOUNDS = RoleBounds(min_replicas=1, max_replicas=10)
ROLE = Role.MIXED


def pod(index: int, *, ready: bool = True, running: float = 8.0, age_s: float = 5.0) -> PodSignals:
    """A ready pod with fresh-enough signals, or a starting one with none."""
    if not ready:
        return PodSignals(f"starting-{index}", ROLE, False, 64)
    return PodSignals(f"ready-{index}", ROLE, True, 64, running, 0.0, sample_age_s=age_s)


def snapshot(
    replicas: int = 5,
    *,
    ready: int | None = None,
    now_s: float = NOW_S,
    pod_age_s: float = 5.0,
    pool_age_s: float = 5.0,
    running: float = 8.0,
    error: str = "",
) -> PoolSnapshot:
    """One role with `ready` ready pods (default: all) and the rest starting."""
    ready = replicas if ready is None else ready
    pods = tuple(pod(i, ready=i < ready, running=running, age_s=pod_age_s) for i in range(replicas))
    role = RoleSnapshot(ROLE, replicas, ready, replicas - ready, 64, pods)
    return PoolSnapshot(now_s, {ROLE: role}, metrics_age_s=pool_age_s, metrics_error=error)


def proposal(value: int) -> Verdict:
    return Verdict(value, Reason.TARGET_TRACKING, f"policy wants {value}")


def context(
    snap: PoolSnapshot,
    *,
    state: GuardState | None = None,
    tuning: GuardTuning = TUNING,
    bounds: RoleBounds = BOUNDS,
) -> GuardContext:
    return guard_context(snap, ROLE, bounds, tuning, state or GuardState())


# --- metrics_problem -------------------------------------------------------------------------


def _two_roles_one_empty() -> PoolSnapshot:
    busy = snapshot(3)
    empty = RoleSnapshot(Role.BATCH, 0, 0, 0, 256)
    return PoolSnapshot(NOW_S, {ROLE: busy.role(ROLE), Role.BATCH: empty}, metrics_age_s=5.0)


def _all_signals_missing() -> PoolSnapshot:
    pods = tuple(PodSignals(f"p{i}", ROLE, True, 64, sample_age_s=5.0) for i in range(3))
    role = RoleSnapshot(ROLE, 3, 3, 0, 64, pods)
    return PoolSnapshot(NOW_S, {ROLE: role}, metrics_age_s=5.0)


def _one_of_two_stale() -> PoolSnapshot:
    role = RoleSnapshot(ROLE, 2, 2, 0, 64, (pod(0, age_s=5.0), pod(1, age_s=500.0)))
    return PoolSnapshot(NOW_S, {ROLE: role}, metrics_age_s=5.0)


@pytest.mark.parametrize(
    ("name", "snap", "role", "expected"),
    [
        ("fresh", snapshot(), ROLE, None),
        ("source failed", snapshot(error="connection refused"), ROLE, Reason.METRICS_MISSING),
        ("pool sample old", snapshot(pool_age_s=61.0), ROLE, Reason.METRICS_STALE),
        ("pool never answered", snapshot(pool_age_s=math.inf), ROLE, Reason.METRICS_STALE),
        ("no signals on ready pods", _all_signals_missing(), ROLE, Reason.METRICS_MISSING),
        ("every ready pod stale", snapshot(pod_age_s=61.0), ROLE, Reason.METRICS_STALE),
        ("one of two pods stale", _one_of_two_stale(), ROLE, None),
        ("only starting pods", snapshot(3, ready=0), ROLE, None),
        ("role without pods", _two_roles_one_empty(), Role.BATCH, None),
        ("pool without pods", PoolSnapshot(NOW_S, {}), ROLE, None),
        (
            "failed source, no pods",
            PoolSnapshot(NOW_S, {}, metrics_error="x"),
            ROLE,
            Reason.METRICS_MISSING,
        ),
    ],
)
def test_metrics_problem(
    name: str, snap: PoolSnapshot, role: Role, expected: Reason | None
) -> None:
    found = metrics_problem(snap, role, STALENESS_S)
    assert (None if found is None else found[0]) is expected, name
    if found is not None:
        assert found[1], "a problem always carries a message"


# --- each stage in a table -------------------------------------------------------------------

COOLING = GuardState(last_scale_up_s=NOW_S - 10.0)
COOLED = GuardState(last_scale_up_s=NOW_S - 40.0)
HIGH_RECENTLY = GuardState(recommendations=((NOW_S - 100.0, 7),))
FOUR_RECENTLY = GuardState(recommendations=((NOW_S - 100.0, 4),))
HIGH_LONG_AGO = GuardState(recommendations=((NOW_S - 400.0, 7),))
NO_WINDOW = GuardTuning(scale_down_stabilization_s=0.0)
TIGHT = RoleBounds(min_replicas=2, max_replicas=6)
INVERTED = RoleBounds(min_replicas=5, max_replicas=3)

HOLD, PENDING, STABLE = (
    guards.hold_on_metrics_problem,
    guards.respect_pending_capacity,
    guards.stabilise_scale_down,
)
COOL, STEP, CLAMP = guards.cool_down_scale_up, guards.limit_step, guards.clamp_to_bounds
R = Reason
STALE_5 = context(snapshot(5, pod_age_s=500.0))
EMPTY_BLIND = context(
    PoolSnapshot(NOW_S, {ROLE: RoleSnapshot(ROLE, 0, 0, 0, 64)}, metrics_error="timeout")
)
STARTING_2_OF_6 = context(snapshot(6, ready=4))


class Case(NamedTuple):
    name: str
    stage: Stage
    ctx: GuardContext
    proposed: int
    value: int
    reason: Reason


SIX_HIGH = context(snapshot(6), state=HIGH_RECENTLY)
SIX_FOUR = context(snapshot(6), state=FOUR_RECENTLY)
SIX_EXPIRED = context(snapshot(6), state=HIGH_LONG_AGO)
SIX_NO_WINDOW = context(snapshot(6), state=HIGH_RECENTLY, tuning=NO_WINDOW)
FIVE_COOLING = context(snapshot(5), state=COOLING)
FIVE_COOLED = context(snapshot(5), state=COOLED)
THREE_TIGHT = context(snapshot(3), bounds=TIGHT)
THREE_INVERTED = context(snapshot(3), bounds=INVERTED)

STAGE_CASES = [
    Case("stale holds a scale-down", HOLD, STALE_5, 2, 5, R.METRICS_STALE),
    Case("stale holds a scale-up", HOLD, STALE_5, 9, 5, R.METRICS_STALE),
    Case("missing still lifts to min", HOLD, EMPTY_BLIND, 0, 1, R.METRICS_MISSING),
    Case("fresh passes", HOLD, context(snapshot(5)), 2, 2, R.TARGET_TRACKING),
    Case("starting: down stops at ready", PENDING, STARTING_2_OF_6, 2, 4, R.PENDING_CAPACITY),
    Case("starting: cancelling them is fine", PENDING, STARTING_2_OF_6, 5, 5, R.TARGET_TRACKING),
    Case("starting: scale-up passes", PENDING, STARTING_2_OF_6, 9, 9, R.TARGET_TRACKING),
    Case("settled: scale-down passes", PENDING, context(snapshot(6)), 2, 2, R.TARGET_TRACKING),
    Case("higher in window holds", STABLE, SIX_HIGH, 2, 6, R.SCALE_DOWN_STABILIZATION),
    Case("down only to window max", STABLE, SIX_FOUR, 2, 4, R.SCALE_DOWN_STABILIZATION),
    Case("fresh: current seeded", STABLE, context(snapshot(6)), 2, 6, R.SCALE_DOWN_STABILIZATION),
    Case("expired: current seeded", STABLE, SIX_EXPIRED, 2, 6, R.SCALE_DOWN_STABILIZATION),
    Case("no window, no stabilisation", STABLE, SIX_NO_WINDOW, 2, 2, R.TARGET_TRACKING),
    Case("scale-up not stabilised", STABLE, SIX_HIGH, 8, 8, R.TARGET_TRACKING),
    Case("within cooldown", COOL, FIVE_COOLING, 8, 5, R.SCALE_UP_COOLDOWN),
    Case("after cooldown", COOL, FIVE_COOLED, 8, 8, R.TARGET_TRACKING),
    Case("cooldown ignores down", COOL, FIVE_COOLING, 3, 3, R.TARGET_TRACKING),
    Case("up by at most 4", STEP, context(snapshot(5)), 12, 9, R.MAX_STEP_LIMITED),
    Case("down by at most 1", STEP, context(snapshot(5)), 2, 4, R.MAX_STEP_LIMITED),
    Case("small step passes", STEP, context(snapshot(5)), 7, 7, R.TARGET_TRACKING),
    Case("below min", CLAMP, THREE_TIGHT, 1, 2, R.CLAMPED_TO_MIN),
    Case("above max", CLAMP, THREE_TIGHT, 9, 6, R.CLAMPED_TO_MAX),
    Case("inside bounds", CLAMP, THREE_TIGHT, 4, 4, R.TARGET_TRACKING),
    Case("max beats a larger min", CLAMP, THREE_INVERTED, 4, 3, R.CLAMPED_TO_MAX),
]


@pytest.mark.parametrize("case", STAGE_CASES, ids=[case.name for case in STAGE_CASES])
def test_stage(case: Case) -> None:
    result = case.stage(case.ctx, proposal(case.proposed))
    assert (result.value, result.reason) == (case.value, case.reason)
    if result.reason is not Reason.TARGET_TRACKING:
        assert f"(was: policy wants {case.proposed})" in result.message, "policy context kept"


# --- composition -----------------------------------------------------------------------------


def test_stages_run_in_the_documented_order() -> None:
    documented = (HOLD, PENDING, STABLE, COOL, STEP, guards.cap_unschedulable, CLAMP)
    assert documented == guards.STAGES


def test_stabilisation_comes_before_the_step() -> None:
    # Window max 4 stops the fall at 4; the step then allows only 6 -> 5.
    ctx = context(snapshot(6), state=FOUR_RECENTLY)
    result = guards.run_stages(ctx, proposal(1))
    assert (result.value, result.reason) == (5, Reason.MAX_STEP_LIMITED)
    assert "policy wants 1" in result.message and "highest recommendation" in result.message


def test_bounds_win_last() -> None:
    ctx = context(snapshot(5), bounds=RoleBounds(min_replicas=1, max_replicas=8))
    result = guards.run_stages(ctx, proposal(20))
    assert (result.value, result.reason) == (8, Reason.CLAMPED_TO_MAX)


def test_min_holds_even_through_a_cooldown_and_stale_metrics() -> None:
    empty = RoleSnapshot(ROLE, 0, 0, 0, 64)
    snap = PoolSnapshot(NOW_S, {ROLE: empty}, metrics_error="prometheus down")
    ctx = context(snap, state=COOLING, bounds=RoleBounds(min_replicas=2, max_replicas=8))
    assert guards.run_stages(ctx, proposal(0)).value == 2


def test_apply_guards_accepts_a_lookup_or_a_mapping_and_skips_absent_roles() -> None:
    snap = snapshot(5)
    proposals = {ROLE: proposal(7)}
    by_map, states = apply_guards(snap, proposals, {ROLE: BOUNDS}, TUNING, {})
    by_fn, _ = apply_guards(snap, proposals, lambda _role: BOUNDS, TUNING, {})
    assert by_map == by_fn
    assert set(by_map) == set(states) == {ROLE}
    assert by_map[ROLE].value == 7


def test_a_role_without_bounds_may_not_run() -> None:
    verdicts, _ = apply_guards(snapshot(5), {ROLE: proposal(3)}, {}, TUNING, {})
    assert (verdicts[ROLE].value, verdicts[ROLE].reason) == (0, Reason.CLAMPED_TO_MAX)


def test_state_records_scale_times_and_keeps_the_window_short() -> None:
    state = GuardState(recommendations=((NOW_S - 50.0, 3), (NOW_S - 20.0, 6)))
    verdicts, states = apply_guards(
        snapshot(5), {ROLE: proposal(7)}, {ROLE: BOUNDS}, TUNING, {ROLE: state}
    )
    assert verdicts[ROLE].value == 7
    new = states[ROLE]
    assert new.last_scale_up_s == NOW_S and new.last_scale_down_s is None
    # 3 and 6 can never be the window's max again once 7 is recorded later.
    assert new.recommendations == ((NOW_S, 7),)


def test_starting_pods_never_cost_ready_ones_even_without_other_damping() -> None:
    undamped = GuardTuning(
        max_scale_down_step_replicas=100, scale_up_cooldown_s=0.0, scale_down_stabilization_s=0.0
    )
    snap = snapshot(6, ready=4)
    verdicts, _ = apply_guards(snap, {ROLE: proposal(1)}, {ROLE: BOUNDS}, undamped, {})
    assert (verdicts[ROLE].value, verdicts[ROLE].reason) == (4, Reason.PENDING_CAPACITY)
    settled, _ = apply_guards(snapshot(6), {ROLE: proposal(1)}, {ROLE: BOUNDS}, undamped, {})
    assert settled[ROLE].value == 1


def test_recommendations_are_not_recorded_while_metrics_are_stale() -> None:
    snap = snapshot(5, pod_age_s=500.0)
    _, states = apply_guards(snap, {ROLE: proposal(1)}, {ROLE: BOUNDS}, TUNING, {})
    assert all(value != 1 for _, value in states[ROLE].recommendations)


# --- scenarios on a driven clock -------------------------------------------------------------


def drive(
    values: list[int], start: int, tick_s: float = 15.0, tuning: GuardTuning = TUNING
) -> list[Verdict]:
    """Feed one proposal per tick; the plant applies each verdict at once."""
    replicas, state, out = start, GuardState(), []
    for tick, value in enumerate(values):
        snap = snapshot(replicas, now_s=tick * tick_s)
        verdicts, states = apply_guards(
            snap, {ROLE: proposal(value)}, {ROLE: BOUNDS}, tuning, {ROLE: state}
        )
        state, replicas = states[ROLE], verdicts[ROLE].value
        out.append(verdicts[ROLE])
    return out


def test_sustained_low_recommendation_scales_down_after_the_window_one_step_a_tick() -> None:
    out = drive([6] * 4 + [2] * 40, start=6)
    values = [v.value for v in out]
    last_six_s = 3 * 15.0
    first_drop = next(i for i, v in enumerate(values) if v < 6)
    assert first_drop * 15.0 >= last_six_s + TUNING.scale_down_stabilization_s
    assert values[first_drop : first_drop + 4] == [5, 4, 3, 2]
    assert values[-1] == 2


def test_a_single_dip_does_not_scale_down() -> None:
    out = drive([6] * 5 + [1] + [6] * 5, start=6)
    assert [v.value for v in out] == [6] * 11


def test_scale_up_respects_the_cooldown() -> None:
    out = drive([10] * 6, start=2, tick_s=10.0)
    # +4 at t=0, cooldown 30 s holds t=10 and t=20, +4 at t=30, then capped by max.
    assert [v.value for v in out] == [6, 6, 6, 10, 10, 10]
    assert out[1].reason is Reason.SCALE_UP_COOLDOWN


# --- properties ------------------------------------------------------------------------------

bounds_st = st.builds(
    lambda low, span: RoleBounds(min_replicas=low, max_replicas=low + span),
    st.integers(0, 4),
    st.integers(0, 8),
)
state_st = st.builds(
    GuardState,
    last_scale_up_s=st.none() | st.floats(NOW_S - 500.0, NOW_S),
    last_scale_down_s=st.none() | st.floats(NOW_S - 500.0, NOW_S),
    recommendations=st.lists(
        st.tuples(st.floats(NOW_S - 600.0, NOW_S), st.integers(0, 20)), max_size=5
    ).map(tuple),
)
tuning_st = st.builds(
    GuardTuning,
    max_scale_up_step_replicas=st.integers(1, 6),
    max_scale_down_step_replicas=st.integers(1, 6),
    scale_up_cooldown_s=st.sampled_from([0.0, 30.0, 120.0]),
    scale_down_stabilization_s=st.sampled_from([0.0, 60.0, 300.0]),
)


@st.composite
def situations(draw: st.DrawFn) -> tuple[PoolSnapshot, int]:
    replicas = draw(st.integers(0, 14))
    ready = draw(st.integers(0, replicas))
    age = draw(st.sampled_from([5.0, 500.0]))
    error = draw(st.sampled_from(["", "", "timeout"]))
    snap = snapshot(replicas, ready=ready, pod_age_s=age, pool_age_s=age, error=error)
    return snap, draw(st.integers(0, 25))


@settings(max_examples=300, deadline=None)
@given(situation=situations(), bounds=bounds_st, tuning=tuning_st, state=state_st)
def test_output_always_within_bounds(
    situation: tuple[PoolSnapshot, int], bounds: RoleBounds, tuning: GuardTuning, state: GuardState
) -> None:
    snap, value = situation
    verdicts, _ = apply_guards(snap, {ROLE: proposal(value)}, {ROLE: bounds}, tuning, {ROLE: state})
    assert bounds.min_replicas <= verdicts[ROLE].value <= bounds.max_replicas


@settings(max_examples=300, deadline=None)
@given(situation=situations(), bounds=bounds_st, tuning=tuning_st, state=state_st)
def test_never_below_current_on_missing_or_stale_metrics(
    situation: tuple[PoolSnapshot, int], bounds: RoleBounds, tuning: GuardTuning, state: GuardState
) -> None:
    snap, value = situation
    problem = metrics_problem(snap, ROLE, tuning.metrics_staleness_s)
    verdicts, _ = apply_guards(snap, {ROLE: proposal(value)}, {ROLE: bounds}, tuning, {ROLE: state})
    if problem is not None:
        current = snap.role(ROLE).replicas
        assert verdicts[ROLE].value >= min(current, bounds.max_replicas)
        assert verdicts[ROLE].value <= max(current, bounds.min_replicas)


@settings(max_examples=150, deadline=None)
@given(
    level=st.integers(1, 10),
    dip=st.integers(0, 9),
    before=st.integers(1, 10),
    tick_s=st.sampled_from([1.0, 5.0, 15.0, 30.0]),
)
def test_a_single_low_dip_never_scales_down(
    level: int, dip: int, before: int, tick_s: float
) -> None:
    out = drive([level] * before + [min(dip, level - 1)] + [level] * 3, start=level, tick_s=tick_s)
    assert all(v.value >= level for v in out)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(0, 12), min_size=1, max_size=30), start=st.integers(0, 10))
def test_state_round_trips_through_the_wire(values: list[int], start: int) -> None:
    replicas, state = start, GuardState()
    for tick, value in enumerate(values):
        snap = snapshot(replicas, now_s=tick * 15.0)
        verdicts, states = apply_guards(
            snap, {ROLE: proposal(value)}, {ROLE: BOUNDS}, TUNING, {ROLE: state}
        )
        state, replicas = states[ROLE], verdicts[ROLE].value
        assert from_wire(GuardState, to_wire(state)) == state
