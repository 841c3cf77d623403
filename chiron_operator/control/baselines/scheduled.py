"""Scheduled provisioning: instance counts that follow a schedule known in advance.

Not an autoscaler a user would run: it is how the benchmark's hindsight reference is simulated
(`sim.harness.hindsight` searches the schedule with knowledge of the whole trace). The schedule
says how many instances must be *ready* from each step's start; a cold start takes up to
`lead_s`, so at time t the policy asks for the most any step overlapping [t, t + lead_s]
needs: a scale-out is started a cold start ahead of the need, and a scale-in happens only once
no step within the lead needs the instances any more.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from chiron_operator.control.baselines.common import decide_per_role
from chiron_operator.control.baselines.tuning import (
    BaselineState,
    baseline_bounds,
    undamped_guards,
)
from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.decision import PoolDecision, Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PoolSnapshot
from chiron_operator.core.tuning import WIRE, GuardTuning, RoleBounds

POLICY_NAME = "scheduled"

Step = tuple[Annotated[float, Field(ge=0.0)], Annotated[int, Field(ge=0)]]


@dataclass(frozen=True, config=WIRE)
class ScheduleTuning:
    """A per-role schedule of ready instances, and how far ahead of need instances start."""

    bounds: Mapping[Role, RoleBounds] = Field(
        default_factory=baseline_bounds, description="Roles the schedule scales, and bounds."
    )
    guards: GuardTuning = Field(
        default_factory=undamped_guards, description="Undamped: the schedule is the rate."
    )
    steps: Mapping[Role, Sequence[Step]] = Field(
        default_factory=dict,
        description="Per role, (start_s, instances) steps sorted by start; before the first "
        "step the first step's count applies.",
    )
    lead_s: float = Field(
        default=0.0, ge=0.0, description="How long before a step's start its instances start."
    )

    @field_validator("steps")
    @classmethod
    def _sorted(cls, value: Mapping[Role, Sequence[Step]]) -> Mapping[Role, Sequence[Step]]:
        for role, steps in value.items():
            starts = [start for start, _ in steps]
            if not steps or starts != sorted(starts):
                raise ValueError(f"{role.value}: steps must be non-empty and sorted by start")
        return value


def scheduled_count(steps: Sequence[Step], now_s: float, lead_s: float) -> int:
    """The most instances any step overlapping [now_s, now_s + lead_s] needs."""
    starts = [start for start, _ in steps]
    first = max(0, bisect.bisect_right(starts, now_s) - 1)
    last = max(first, bisect.bisect_right(starts, now_s + lead_s) - 1)
    return max(count for _, count in steps[first : last + 1])


def propose(role: Role, tuning: ScheduleTuning, now_s: float) -> Verdict:
    """The role's scheduled count now, or its max when the schedule does not name it."""
    steps = tuning.steps.get(role)
    if not steps:
        replicas = tuning.bounds[role].max_replicas
        return Verdict(replicas, Reason.STATIC, f"no schedule for {role.value}: {replicas}")
    replicas = scheduled_count(steps, now_s, tuning.lead_s)
    why = f"schedule: {replicas} {role.value} ready by {now_s + tuning.lead_s:.0f} s"
    return Verdict(replicas, Reason.STATIC, why)


def decide(
    snapshot: PoolSnapshot, tuning: ScheduleTuning, state: BaselineState
) -> tuple[PoolDecision, BaselineState]:
    """One tick: every scaled role asks for its scheduled count, behind the guard rails."""
    decision, guards = decide_per_role(
        snapshot, tuning, state.guards, lambda role: (propose(role, tuning, snapshot.now_s), {})
    )
    return decision, BaselineState(guards)


def bound(tuning: ScheduleTuning) -> BoundPolicy[ScheduleTuning, BaselineState]:
    """Scheduled provisioning with its schedule bound."""
    return BoundPolicy(POLICY_NAME, tuning, decide, BaselineState())
