"""Below the interactive backpressure band, every instance the load does not need at the band's
middle goes at once: interactive first down to its min, then mixed unless batch work needs them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals
from chiron_operator.core.tuning import PoolTuning, RoleBounds
from tests.control.test_global_scaling import (
    BAND_TUNING,
    EMPTY_QUEUE,
    TUNING,
    at_level,
    backlog,
    decide,
    pod,
    snapshot,
    unloaded,
)

LOW = Reason.INTERACTIVE_BACKPRESSURE_LOW


def test_the_default_band_is_wide_and_its_middle_sizes_the_scale_in() -> None:
    knobs = TUNING.global_scaling
    assert (knobs.ibp_low_ratio, knobs.ibp_high_ratio) == (0.2, 0.8)
    assert (knobs.ibp_low_ratio + knobs.ibp_high_ratio) / 2 == pytest.approx(0.5)
    # 1 busy of 7: 0.14 < 0.2. ceil(1 / 0.5) = 2 carry it: 5 go, 3 interactive (down to its
    # min of 1), then 2 mixed.
    pods = at_level(Role.INTERACTIVE, 1) + unloaded(Role.INTERACTIVE, 3) + unloaded(Role.MIXED, 3)
    proposals, _, _ = decide(snapshot(pods))
    assert (proposals[Role.INTERACTIVE].value, proposals[Role.MIXED].value) == (1, 1)
    assert {proposals[r].reason for r in (Role.INTERACTIVE, Role.MIXED)} == {LOW}
    message = proposals[Role.INTERACTIVE].message
    assert "interactive backpressure 0.14 < 0.20 (1.0 of 7 instances busy)" in message
    assert "2 instance(s) carry the load at 0.50; remove 3 interactive" in message
    assert proposals[Role.MIXED].message.endswith("remove 2 mixed")


def test_interactive_goes_first_and_mixed_stays_while_the_surplus_is_taken() -> None:
    # 2.2 busy of 8: 0.275 < 0.3. ceil(2.2 / 0.55) = 4 needed, 4 surplus, all of them
    # interactive (5 above its min): the mixed are untouched.
    pods = [
        *at_level(Role.INTERACTIVE, 2),
        pod(Role.INTERACTIVE, 3.84, interactive=3.84),
        *unloaded(Role.INTERACTIVE, 3),
        *unloaded(Role.MIXED, 2),
    ]
    proposals, observations, _ = decide(snapshot(pods), BAND_TUNING)
    assert observations["busy_instances"] == pytest.approx(2.2)
    assert proposals[Role.INTERACTIVE].value == 2
    assert (proposals[Role.MIXED].value, proposals[Role.MIXED].reason) == (2, LOW)
    assert "remove" not in proposals[Role.MIXED].message


def test_mixed_carrying_batch_work_stay_while_interactive_goes() -> None:
    # Batch queued and no batch instance: the mixed pods are its only home.
    pods = unloaded(Role.INTERACTIVE, 4) + unloaded(Role.MIXED, 3)
    proposals, _, _ = decide(snapshot(pods, backlog((3600.0, 10))))
    assert proposals[Role.INTERACTIVE].value == 1
    assert (proposals[Role.MIXED].value, proposals[Role.MIXED].reason) == (3, LOW)


def test_nothing_spare_says_why() -> None:
    bounds = {**TUNING.bounds, Role.MIXED: RoleBounds(min_replicas=2, max_replicas=8)}
    pods = unloaded(Role.INTERACTIVE, 1) + unloaded(Role.MIXED, 2)
    proposals, _, _ = decide(snapshot(pods), PoolTuning(bounds=bounds))
    for role, count in ((Role.INTERACTIVE, 1), (Role.MIXED, 2)):
        assert (proposals[role].value, proposals[role].reason) == (count, LOW)
        assert "; interactive and mixed at their min" in proposals[role].message


def test_an_idle_pool_keeps_one_instance_for_the_load_to_come() -> None:
    bounds = {**TUNING.bounds, Role.INTERACTIVE: RoleBounds(min_replicas=0, max_replicas=8)}
    tuning = PoolTuning(bounds=bounds, global_scaling=BAND_TUNING.global_scaling)
    proposals, _, _ = decide(snapshot(unloaded(Role.INTERACTIVE, 4)), tuning)
    assert proposals[Role.INTERACTIVE].value == 1
    assert "1 instance(s) carry the load at 0.55; remove 3 interactive" in (
        proposals[Role.INTERACTIVE].message
    )


interactive_loads = st.lists(st.floats(0.0, 19.2), min_size=1, max_size=8)
mixed_loads = st.lists(st.floats(0.0, 38.4), max_size=6)


@settings(max_examples=200, deadline=None)
@given(interactive=interactive_loads, mixed=mixed_loads)
def test_scale_in_keeps_exactly_what_the_middle_needs(
    interactive: list[float], mixed: list[float]
) -> None:
    """The survivors carry the load at or under the band's middle (so it cannot flap back
    above the band), and one fewer would not, unless both roles are at their min."""
    pods: list[PodSignals] = [pod(Role.INTERACTIVE, r, interactive=r) for r in interactive]
    pods += [pod(Role.MIXED, r, cap=64, interactive=r) for r in mixed]
    proposals, observations, _ = decide(snapshot(pods, EMPTY_QUEUE))
    if proposals[Role.INTERACTIVE].reason is not LOW:
        return
    knobs = TUNING.global_scaling
    mid = (knobs.ibp_low_ratio + knobs.ibp_high_ratio) / 2
    busy = observations["busy_instances"]
    survivors = proposals[Role.INTERACTIVE].value + proposals[Role.MIXED].value
    floor = TUNING.role_bounds(Role.INTERACTIVE).min_replicas
    assert busy / survivors <= mid + 1e-9
    assert survivors == max(floor, math.ceil(busy / mid - 1e-9))
