"""The restart-aware layer: gate tables, clocked scenarios and properties over random targets."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.control.restart import HOUR_S, decide_restart
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason
from chiron_operator.core.state import RestartState
from chiron_operator.core.tuning import RestartTuning

TUNING = RestartTuning(
    min_change_ratio=0.25, dwell_s=120.0, urgent_dwell_s=30.0, min_interval_s=300.0,
    max_restarts_per_hour=4,
)  # fmt: skip
EMPTY = RestartState()


def want(value: int, reason: Reason = Reason.BATCH_SIZE_INCREASE) -> Verdict:
    return Verdict(value, reason, f"local wants {value}")


# --- tables ----------------------------------------------------------------------------------


def test_target_at_applied_passes_through_and_clears_pending() -> None:
    target = want(64, Reason.BATCH_SIZE_UNSATURATED)
    state = RestartState(pending_target_seqs=128, pending_since_s=0.0, restart_times_s=(10.0,))
    verdict, new_state = decide_restart(100.0, 64, target, False, TUNING, state)
    assert verdict == target
    assert new_state == RestartState(restart_times_s=(10.0,))


@pytest.mark.parametrize("target", [49, 63, 65, 79])
def test_small_change_keeps_applied_and_clears_pending(target: int) -> None:
    state = RestartState(pending_target_seqs=128, pending_since_s=0.0)
    verdict, new_state = decide_restart(1000.0, 64, want(target), False, TUNING, state)
    assert (verdict.value, verdict.reason) == (64, Reason.RESTART_BELOW_HYSTERESIS)
    assert f"target {target}" in verdict.message
    assert "keep 64" in verdict.message
    assert "(was: local wants" in verdict.message  # the local reason stays as context
    assert new_state.pending_target_seqs is None


@pytest.mark.parametrize(
    ("target", "urgent", "dwell_s"),
    [
        (128, False, 120.0),
        (32, False, 120.0),
        (32, True, 30.0),  # an SLO breach shortens the dwell of a decrease...
        (128, True, 120.0),  # ...never of an increase
    ],
)
def test_applies_only_after_the_dwell(target: int, urgent: bool, dwell_s: float) -> None:
    verdict, state = decide_restart(1000.0, 64, want(target), urgent, TUNING, EMPTY)
    assert (verdict.value, verdict.reason) == (64, Reason.RESTART_DWELLING)
    assert f"{dwell_s:.0f} s to go" in verdict.message
    verdict, state = decide_restart(1000.0 + dwell_s - 1, 64, want(target), urgent, TUNING, state)
    assert (verdict.reason, "1 s to go" in verdict.message) == (Reason.RESTART_DWELLING, True)
    verdict, state = decide_restart(1000.0 + dwell_s, 64, want(target), urgent, TUNING, state)
    assert (verdict.value, verdict.reason) == (target, Reason.RESTART_APPLIED)
    assert f"64 -> {target}" in verdict.message
    assert state == RestartState(restart_times_s=(1000.0 + dwell_s,))


def test_dwell_survives_a_changing_target_on_the_same_side() -> None:
    _, state = decide_restart(0.0, 64, want(100), False, TUNING, EMPTY)
    _, state = decide_restart(60.0, 64, want(128), False, TUNING, state)
    verdict, _ = decide_restart(120.0, 64, want(90), False, TUNING, state)
    assert (verdict.value, verdict.reason) == (90, Reason.RESTART_APPLIED)


def test_direction_switch_restarts_the_dwell() -> None:
    _, state = decide_restart(0.0, 64, want(128), False, TUNING, EMPTY)
    _, state = decide_restart(100.0, 64, want(32), False, TUNING, state)
    assert state.pending_since_s == 100.0
    verdict, _ = decide_restart(200.0, 64, want(32), False, TUNING, state)
    assert verdict.reason is Reason.RESTART_DWELLING
    assert "100 s of 120 s: 20 s to go" in verdict.message


def test_least_interval_between_restarts() -> None:
    state = RestartState(pending_target_seqs=128, pending_since_s=0.0, restart_times_s=(900.0,))
    verdict, new_state = decide_restart(1000.0, 64, want(128), False, TUNING, state)
    assert (verdict.value, verdict.reason) == (64, Reason.RESTART_MIN_INTERVAL)
    assert "last restart 100 s ago" in verdict.message
    assert "200 s to go" in verdict.message
    assert new_state.pending_since_s == 0.0  # the dwell already served is kept
    verdict, _ = decide_restart(1200.0, 64, want(128), False, TUNING, new_state)
    assert verdict.reason is Reason.RESTART_APPLIED


def test_budget_per_sliding_hour() -> None:
    log = (0.0, 600.0, 1200.0, 1800.0)
    state = RestartState(pending_target_seqs=128, pending_since_s=2000.0, restart_times_s=log)
    verdict, new_state = decide_restart(3000.0, 64, want(128), False, TUNING, state)
    assert (verdict.value, verdict.reason) == (64, Reason.RESTART_BUDGET_EXHAUSTED)
    assert "4 restarts in the last hour, budget 4: next in 600 s" in verdict.message
    verdict, new_state = decide_restart(HOUR_S, 64, want(128), False, TUNING, new_state)
    assert verdict.reason is Reason.RESTART_APPLIED  # the restart at 0 s left the window
    assert new_state.restart_times_s == (600.0, 1200.0, 1800.0, HOUR_S)


def test_zero_budget_never_restarts() -> None:
    tuning = RestartTuning(dwell_s=0.0, max_restarts_per_hour=0)
    verdict, _ = decide_restart(0.0, 64, want(128), False, tuning, EMPTY)
    assert verdict.reason is Reason.RESTART_BUDGET_EXHAUSTED
    assert "no restarts allowed" in verdict.message


def test_unknown_applied_size_counts_as_a_significant_change() -> None:
    tuning = RestartTuning(dwell_s=0.0)
    verdict, _ = decide_restart(0.0, 0, want(32), False, tuning, EMPTY)
    assert (verdict.value, verdict.reason) == (32, Reason.RESTART_APPLIED)


def test_a_clock_that_went_back_restarts_the_dwell() -> None:
    state = RestartState(pending_target_seqs=128, pending_since_s=5000.0)
    verdict, new_state = decide_restart(1000.0, 64, want(128), False, TUNING, state)
    assert verdict.reason is Reason.RESTART_DWELLING
    assert new_state.pending_since_s == 1000.0


# --- scenarios with an injected clock --------------------------------------------------------


@dataclass
class Deployment:
    """A role's Deployment as the layer drives it: the applied size and when it restarted."""

    applied: int = 64
    state: RestartState = EMPTY
    restarts: int = 0

    def tick(self, now_s: float, target: int, urgent: bool = False) -> Verdict:
        verdict, self.state = decide_restart(
            now_s, self.applied, want(target), urgent, TUNING, self.state
        )
        if verdict.value != self.applied:
            self.applied, self.restarts = verdict.value, self.restarts + 1
        return verdict


def test_a_target_flapping_around_applied_never_restarts() -> None:
    deployment = Deployment()
    flaps = [128, 32, 100, 40, 64, 30, 200, 70, 58]  # every side, every size, for an hour
    for tick in range(240):
        deployment.tick(tick * 15.0, flaps[tick % len(flaps)], urgent=tick % 2 == 1)
    assert deployment.restarts == 0


def test_a_sustained_doubling_restarts_exactly_once_after_the_dwell() -> None:
    deployment, applied_at = Deployment(), []
    for tick in range(240):
        if deployment.tick(tick * 15.0, 128).reason is Reason.RESTART_APPLIED:
            applied_at.append(tick * 15.0)
    assert applied_at == [TUNING.dwell_s]
    assert (deployment.applied, deployment.restarts) == (128, 1)


def test_budget_slides_with_the_hour_over_a_long_run() -> None:
    tuning = RestartTuning(dwell_s=0.0, min_interval_s=0.0, max_restarts_per_hour=4)
    applied, state, restarted_at = 64, EMPTY, []
    for tick in range(200):  # every minute, always asking for double
        now_s = tick * 60.0
        verdict, state = decide_restart(now_s, applied, want(applied * 2), False, tuning, state)
        if verdict.reason is Reason.RESTART_APPLIED:
            applied = verdict.value
            restarted_at.append(now_s)
    hours = (0.0, HOUR_S, 2 * HOUR_S, 3 * HOUR_S)
    assert restarted_at == [h + m * 60.0 for h in hours for m in range(4)]


# --- properties ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    now_s: float
    applied: int
    target: int
    urgent: bool
    verdict: Verdict


def drive(steps: list[tuple[float, float, bool]], tuning: RestartTuning) -> list[Tick]:
    """Feed (seconds since last tick, target / applied, urgent) through the layer."""
    now_s, applied, state, ticks = 0.0, 64, EMPTY, []
    for dt_s, scale, urgent in steps:
        now_s += dt_s
        target = max(1, round(applied * scale))
        verdict, state = decide_restart(now_s, applied, want(target), urgent, tuning, state)
        ticks.append(Tick(now_s, applied, target, urgent, verdict))
        applied = verdict.value
    return ticks


def seconds(most_s: float) -> st.SearchStrategy[float]:
    # Round values (0, a tick, the defaults) hit the gates' edges; floats cover the rest.
    return st.one_of(st.sampled_from([0.0, 15.0, 30.0, 120.0, 300.0]), st.floats(0.0, most_s))


restart_tunings = st.builds(
    RestartTuning,
    min_change_ratio=st.one_of(st.sampled_from([0.0, 0.25]), st.floats(0.0, 1.0)),
    dwell_s=seconds(600.0),
    urgent_dwell_s=seconds(600.0),
    min_interval_s=st.one_of(seconds(600.0), st.floats(0.0, 4000.0)),
    max_restarts_per_hour=st.integers(0, 6),
)
sequences = st.lists(
    st.tuples(
        st.one_of(st.sampled_from([15.0, 60.0]), st.floats(1.0, 400.0)),
        st.sampled_from([0.25, 0.5, 0.8, 0.95, 1.0, 1.1, 1.3, 2.0, 4.0]),
        st.booleans(),
    ),
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(steps=sequences, tuning=restart_tunings)
def test_property_restart_budget_interval_and_hysteresis_hold(
    steps: list[tuple[float, float, bool]], tuning: RestartTuning
) -> None:
    ticks = drive(steps, tuning)
    restarts = [t for t in ticks if t.verdict.reason is Reason.RESTART_APPLIED]
    times = [t.now_s for t in restarts]
    for t in times:
        assert sum(1 for u in times if t - HOUR_S < u <= t) <= tuning.max_restarts_per_hour
    assert all(b - a >= tuning.min_interval_s for a, b in itertools.pairwise(times))
    for tick in restarts:
        assert abs(tick.target - tick.applied) / tick.applied >= tuning.min_change_ratio
    for tick in ticks:
        changed = tick.verdict.value != tick.applied
        assert changed == (tick.verdict.reason is Reason.RESTART_APPLIED)


@settings(max_examples=200, deadline=None)
@given(steps=sequences, tuning=restart_tunings)
def test_property_applies_only_after_the_dwell(
    steps: list[tuple[float, float, bool]], tuning: RestartTuning
) -> None:
    ticks = drive(steps, tuning)
    for index, tick in enumerate(ticks):
        if tick.verdict.reason is not Reason.RESTART_APPLIED:
            continue
        side = tick.target > tick.applied
        start = index
        # Walk back over the unbroken run of significant targets on the same side.
        while start > 0:
            previous = ticks[start - 1]
            change = abs(previous.target - previous.applied) / previous.applied
            significant = change >= tuning.min_change_ratio
            same = previous.applied == tick.applied and (previous.target > tick.applied) == side
            if not (significant and same and previous.target != previous.applied):
                break
            start -= 1
        urgent_decrease = tick.urgent and not side
        dwell_s = tuning.urgent_dwell_s if urgent_decrease else tuning.dwell_s
        assert tick.now_s - ticks[start].now_s >= dwell_s
