"""Static provisioning: a fixed instance count per role, peak provisioning by default.

The cheapest baseline to reason about and the most expensive to run: it never misses an SLO
for lack of instances it was given, and pays for them all the time.
"""

from __future__ import annotations

from chiron_operator.control.baselines.common import decide_per_role
from chiron_operator.control.baselines.tuning import BaselineState, StaticTuning
from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.decision import PoolDecision, Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PoolSnapshot

POLICY_NAME = "static"


def propose(role: Role, tuning: StaticTuning) -> Verdict:
    """The configured count for the role (its max_replicas when not configured)."""
    replicas = tuning.replicas_for(role)
    return Verdict(replicas, Reason.STATIC, f"static provisioning: {replicas} {role.value}")


def decide(
    snapshot: PoolSnapshot, tuning: StaticTuning, state: BaselineState
) -> tuple[PoolDecision, BaselineState]:
    """One tick: every scaled role asks for its fixed count, behind the guard rails."""
    decision, guards = decide_per_role(
        snapshot, tuning, state.guards, lambda role: (propose(role, tuning), {})
    )
    return decision, BaselineState(guards)


def bound(tuning: StaticTuning | None = None) -> BoundPolicy[StaticTuning, BaselineState]:
    """Static provisioning with its tuning bound (defaults: peak, i.e. every role at max)."""
    return BoundPolicy(
        POLICY_NAME, StaticTuning() if tuning is None else tuning, decide, BaselineState()
    )
