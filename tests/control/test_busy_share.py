"""Interactive backpressure sums how busy each pod is (a share of its busy level), not a count
of pods past a line: a pod at its cap weighs more than one at the line, one below it less."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.control.global_scaling import busy_share, interactive_backpressure_counts
from chiron_operator.core.enums import Role
from tests.control.test_global_scaling import (
    BAND_TUNING,
    TUNING,
    at_level,
    decide,
    idle,
    pod,
    snapshot,
)

RATIO = TUNING.global_scaling.busy_running_ratio


def test_the_busy_level_and_the_cap_bound_the_share() -> None:
    assert RATIO == 0.6
    # Half the busy level, the level, and the cap: 0.5, 1, and 1 / 0.6.
    shares = [busy_share(pod(Role.INTERACTIVE, r, interactive=r), RATIO) for r in (9.6, 19.2, 32)]
    assert shares == pytest.approx([0.5, 1.0, 1 / 0.6])
    # A busy level of 0 would make any request infinitely busy: it is floored at 1%.
    assert busy_share(pod(Role.INTERACTIVE, 1.0, interactive=1.0), 0.0) == pytest.approx(1 / 0.32)
    assert busy_share(pod(Role.INTERACTIVE, 64.0, interactive=64.0), 0.0) == pytest.approx(100.0)


@settings(max_examples=100, deadline=None)
@given(
    running=st.floats(0.0, 64.0),
    more=st.floats(0.0, 64.0),
    waiting=st.sampled_from([0.0, 1.0]),
    cap=st.integers(1, 64),
)
def test_more_running_is_never_less_busy(
    running: float, more: float, waiting: float, cap: int
) -> None:
    def share(r: float) -> float | None:
        interactive = pod(Role.INTERACTIVE, r, waiting, cap=cap, interactive=r)
        return busy_share(interactive, RATIO)

    low, high = share(running), share(running + more)
    assert low is not None and high is not None
    assert 0.0 <= low <= high <= 1 / RATIO + 1e-9
    if waiting > 0:  # requests wait at the pod: at least one busy instance
        assert low >= 1.0


def test_counts_sum_the_shares_of_fresh_pods() -> None:
    pods = [*at_level(Role.INTERACTIVE, 2), *idle(Role.MIXED, 3), pod(Role.INTERACTIVE, 32.0)]
    busy, sampled = interactive_backpressure_counts(
        snapshot(pods), RATIO, TUNING.guards.metrics_staleness_s
    )
    assert isinstance(busy, float)
    assert busy == pytest.approx(2 + 3 * 2.0 / 19.2 + 1 / 0.6)
    assert sampled == 6


def test_backpressure_grows_with_load_below_the_busy_level() -> None:
    # Counted 0 or 1, pods just under the level read as 0 busy however loaded the pool was;
    # as shares, 6 pods at 0.9 of the level are 0.9 busy each: above the band, scale out.
    pods = [pod(Role.INTERACTIVE, 17.28, interactive=17.28) for _ in range(6)]
    proposals, observations, _ = decide(snapshot(pods), BAND_TUNING)
    assert observations["interactive_backpressure_ratio"] == pytest.approx(0.9)
    assert proposals[Role.MIXED].value == 4  # ceil(5.4 / 0.55) = 10 instances: add 4
