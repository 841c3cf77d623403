"""What every baseline shares: the roles it scales, the pods it may read, HPA's scale-up rate,
and one tick over every scaled role (`decide_per_role`): a proposal per role, guarded and
assembled into a `PoolDecision`.

Baselines do not tune batch size: every role keeps its initial --max-num-seqs (reason STATIC),
so the benchmark compares instance scaling alone against Chiron's two levels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from chiron_operator.control.baselines.tuning import BaselineState
from chiron_operator.control.guards import apply_guards, metrics_problem
from chiron_operator.control.policy import DecideFn
from chiron_operator.core.decision import PoolDecision, RoleDecision, Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, RoleSnapshot
from chiron_operator.core.state import GuardState
from chiron_operator.core.tuning import GuardTuning, RoleBounds

# Absorbs float noise in ceil(): 4 x 0.7 / 0.7 must need 4 instances, not 5.
_CEIL_EPS = 1e-9


def scaled_roles(bounds: Mapping[Role, RoleBounds]) -> tuple[Role, ...]:
    """Roles the baseline scales (max_replicas > 0), in the Role enum's order."""
    return tuple(r for r in Role if r in bounds and bounds[r].max_replicas > 0)


def ceil_count(value: float) -> int:
    """Instances needed for a fractional demand, never negative."""
    return max(0, math.ceil(value - _CEIL_EPS))


def usable_pods(snapshot: PoolSnapshot, role: Role, staleness_s: float) -> list[PodSignals]:
    """Ready pods with a fresh sample, or none when the guards distrust the role's metrics.

    Baselines read only what the guard rails would accept, so a proposal is never computed from
    data the guards are about to override anyway.
    """
    if metrics_problem(snapshot, role, staleness_s) is not None:
        return []
    return [p for p in snapshot.role(role).pods if p.ready and p.sample_age_s <= staleness_s]


def ready_count(role: RoleSnapshot) -> int:
    """Ready instances: the pod list's when it has pods, else the Deployment's status."""
    listed = sum(1 for p in role.pods if p.ready)
    return listed if role.pods else role.ready_replicas


def unready_count(role: RoleSnapshot) -> int:
    """Instances asked for but not serving yet (starting, or not even created)."""
    listed = sum(1 for p in role.pods if not p.ready)
    return max(role.replicas - role.ready_replicas, role.starting_replicas, listed, 0)


def mean(values: list[float]) -> float:
    """Arithmetic mean; NaN (unknown, never zero) for no values."""
    return math.fsum(values) / len(values) if values else math.nan


def hold(current: int, reason: Reason, why: str) -> Verdict:
    """A proposal to keep the current size, with why."""
    return Verdict(current, reason, f"{why}: hold {current}")


def hpa_scale_up_limit(
    proposal: Verdict, current: int, limit_replicas: int, limit_ratio: float
) -> Verdict:
    """HPA's default scale-up policy: at most max(N pods, R x current) added per period.

    The period itself is the guards' scale-up cooldown; this is the size of one step.
    """
    cap = max(current + limit_replicas, ceil_count(current * (1.0 + limit_ratio)))
    if proposal.value <= cap:
        return proposal
    return proposal.but(
        cap,
        Reason.MAX_STEP_LIMITED,
        f"HPA scale-up policy: at most max({limit_replicas} pods, {limit_ratio:.0%}) more "
        f"than {current}, so {cap}",
    )


def batch_size(bounds: RoleBounds) -> Verdict:
    """The baselines' batch size: the role's initial --max-num-seqs, untouched."""
    seqs = bounds.initial_batch_size_seqs
    return Verdict(seqs, Reason.STATIC, f"baselines keep --max-num-seqs at the initial {seqs}")


def assemble(
    snapshot: PoolSnapshot,
    bounds: Mapping[Role, RoleBounds],
    guards: GuardTuning,
    guard_states: Mapping[Role, GuardState],
    proposals: Mapping[Role, Verdict],
    *,
    observations: Mapping[str, float],
) -> tuple[PoolDecision, dict[Role, GuardState]]:
    """Guard the proposals and build the decision; returns it with every role's guard state."""
    verdicts, new_states = apply_guards(snapshot, proposals, bounds, guards, guard_states)
    roles = {
        role: RoleDecision(
            role, verdict, batch_size(bounds[role]), bounds[role].initial_batch_size_seqs
        )
        for role, verdict in verdicts.items()
    }
    decision = PoolDecision(snapshot.now_s, roles, dict(observations))
    return decision, {**guard_states, **new_states}


class GuardedTuning(Protocol):
    """What the per-role loop needs of a baseline's tuning: its bounds and guard rails."""

    @property
    def bounds(self) -> Mapping[Role, RoleBounds]: ...

    @property
    def guards(self) -> GuardTuning: ...


RoleProposal = Callable[[Role], tuple[Verdict, Mapping[str, float]]]
"""One role's proposal and the observations it was made from (named for the decision record)."""


def decide_per_role(
    snapshot: PoolSnapshot,
    tuning: GuardedTuning,
    guard_states: Mapping[Role, GuardState],
    propose: RoleProposal,
) -> tuple[PoolDecision, dict[Role, GuardState]]:
    """One baseline tick: `propose` for every scaled role, then the guards, then the decision."""
    proposals: dict[Role, Verdict] = {}
    observations: dict[str, float] = {}
    for role in scaled_roles(tuning.bounds):
        proposals[role], seen = propose(role)
        observations.update(seen)
    return assemble(
        snapshot, tuning.bounds, tuning.guards, guard_states, proposals, observations=observations
    )


GuardedT = TypeVar("GuardedT", bound=GuardedTuning)


def single_signal_decide(
    observation: str, propose: Callable[[PoolSnapshot, Role, GuardedT], tuple[Verdict, float]]
) -> DecideFn[GuardedT, BaselineState]:
    """The decide of a stateless baseline whose proposal reads one signal per role.

    The signal's value is recorded in the decision as `<role>_<observation>`.
    """

    def decide(
        snapshot: PoolSnapshot, tuning: GuardedT, state: BaselineState
    ) -> tuple[PoolDecision, BaselineState]:
        def one_role(role: Role) -> tuple[Verdict, Mapping[str, float]]:
            verdict, value = propose(snapshot, role, tuning)
            return verdict, {f"{role.value}_{observation}": value}

        decision, guards = decide_per_role(snapshot, tuning, state.guards, one_role)
        return decision, BaselineState(guards)

    return decide
