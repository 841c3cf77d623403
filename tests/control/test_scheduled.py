"""Scheduled provisioning (the hindsight reference's policy): counts a cold start ahead."""

from __future__ import annotations

import pytest

from chiron_operator.control.baselines import scheduled
from chiron_operator.control.baselines.scheduled import ScheduleTuning, scheduled_count
from chiron_operator.core.enums import Role
from tests.control.test_baselines import ROLE, pool, wide

STEPS = ((0.0, 2), (600.0, 5), (900.0, 1))


@pytest.mark.parametrize(
    ("now_s", "lead_s", "expected"),
    [
        (0.0, 0.0, 2),
        (599.0, 0.0, 2),
        (600.0, 0.0, 5),
        (899.0, 0.0, 5),
        (900.0, 0.0, 1),
        (5000.0, 0.0, 1),  # the last step lasts
        (540.0, 60.0, 5),  # a scale-out starts a cold start ahead of its step
        (539.0, 60.0, 2),
        (850.0, 60.0, 5),  # a scale-in waits until no step within the lead needs more
        (900.0, 60.0, 1),
    ],
)
def test_scheduled_count_looks_a_cold_start_ahead(
    now_s: float, lead_s: float, expected: int
) -> None:
    assert scheduled_count(STEPS, now_s, lead_s) == expected


def test_the_policy_asks_for_the_schedule_through_the_guards() -> None:
    policy = scheduled.bound(ScheduleTuning(bounds=wide(4), steps={ROLE: STEPS}, lead_s=60.0))
    decision, _ = policy.step(pool(2, now_s=545.0), policy.initial_state)
    assert decision.replicas(ROLE) == 4  # 5 scheduled, clamped to the role's maximum of 4
    decision, _ = policy.step(pool(2, now_s=100.0), policy.initial_state)
    assert decision.replicas(ROLE) == 2
    assert "schedule: 2 mixed" in decision.roles[ROLE].replicas.message


def test_steps_must_be_sorted_and_non_empty() -> None:
    with pytest.raises(ValueError, match="sorted by start"):
        ScheduleTuning(bounds=wide(4), steps={Role.MIXED: ((600.0, 5), (0.0, 2))})
    with pytest.raises(ValueError, match="non-empty"):
        ScheduleTuning(bounds=wide(4), steps={Role.MIXED: ()})
