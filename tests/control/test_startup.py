"""How long a new pod takes to serve: learned from the starts the global controller sees."""

from __future__ import annotations

import dataclasses

import pytest

from chiron_operator.control.global_scaling import decide_global
from chiron_operator.control.startup import STARTUP_WEIGHT_RATIO, observe_startups, startup_s
from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import BatchQueue, PodSignals, PoolSnapshot, RoleSnapshot
from chiron_operator.core.state import GlobalState
from chiron_operator.core.tuning import PoolTuning

TUNING = PoolTuning()


def seen(now_s: float, **ready: bool) -> PoolSnapshot:
    """A pool whose batch pods are `ready` by name at `now_s`."""
    pods = tuple(
        PodSignals(name=name, role=Role.BATCH, ready=up, max_num_seqs=256, sample_age_s=5.0)
        for name, up in ready.items()
    )
    count, up = len(pods), sum(ready.values())
    roles = {Role.BATCH: RoleSnapshot(Role.BATCH, count, up, count - up, 256, pods)}
    return PoolSnapshot(now_s, roles, BatchQueue((), sample_age_s=1.0), metrics_age_s=5.0)


def watch(*ticks: PoolSnapshot, state: GlobalState | None = None) -> GlobalState:
    state = state or GlobalState()
    for snapshot in ticks:
        state = observe_startups(snapshot, state)
    return state


def test_the_prior_stands_until_a_start_is_seen() -> None:
    assert startup_s(TUNING, GlobalState()) == 120.0
    faster = dataclasses.replace(TUNING.global_scaling, startup_prior_s=45.0)
    assert startup_s(PoolTuning(global_scaling=faster), GlobalState()) == 45.0
    assert startup_s(TUNING, GlobalState(startup_s=300.0)) == 300.0


def test_a_start_seen_from_not_ready_to_ready_is_learned() -> None:
    state = watch(seen(100.0, a=False), seen(130.0, a=False))
    assert state.starting_since_s == {"a": 100.0}  # first sight, not the latest
    assert state.startup_s is None
    state = watch(seen(190.0, a=True), state=state)
    assert state.startup_s == pytest.approx(90.0)
    assert state.starting_since_s == {}
    # A ready pod teaches nothing more on later ticks.
    assert watch(seen(400.0, a=True), state=state) == state


def test_later_starts_are_smoothed() -> None:
    state = watch(seen(0.0, a=False), seen(100.0, a=True))
    state = watch(seen(1000.0, a=True, b=False), seen(1300.0, a=True, b=True), state=state)
    assert STARTUP_WEIGHT_RATIO == 0.3
    assert state.startup_s == pytest.approx(0.3 * 300.0 + 0.7 * 100.0)


def test_starts_not_seen_whole_teach_nothing() -> None:
    # Ready at first sight: the operator restarted, or it started between two ticks.
    assert watch(seen(0.0, a=True), seen(60.0, a=True)).startup_s is None
    # Gone before it was ready: forgotten, and a pod of the same name later starts afresh.
    state = watch(seen(0.0, a=False, b=False), seen(50.0, b=False))
    assert state.starting_since_s == {"b": 0.0}
    state = watch(seen(500.0, a=False, b=False), seen(560.0, a=True, b=False), state=state)
    assert state.startup_s == pytest.approx(60.0)
    assert state.starting_since_s == {"b": 0.0}


def test_decide_global_learns_the_startup_and_reports_it() -> None:
    state = GlobalState(batch_instance_tokens_per_s=1500.0)
    _, observations, state = decide_global(seen(0.0, a=False), TUNING, state)
    assert observations["startup_s"] == 120.0
    assert state.starting_since_s == {"a": 0.0}
    assert state.batch_instance_tokens_per_s == 1500.0  # the rest of the memory is kept
    _, observations, state = decide_global(seen(75.0, a=True), TUNING, state)
    assert observations["startup_s"] == pytest.approx(75.0)
    assert state.startup_s == pytest.approx(75.0)
