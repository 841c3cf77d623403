"""Chiron's policy: the global controller sets instance counts, the local one batch sizes.

One tick, in order (each stage pure and separately tested):
  1. global controller -> raw replica proposals per role (interactive and batch backpressure);
  2. guard rails -> bounded, stabilised, metrics-aware replicas;
  3. per role: local controller -> target batch size, then the restart-aware layer decides
     whether the target is worth restarting the role's pods for (the slow path). With a
     gateway (`tuning.fast_path`) the target is the pods' cap at once, and the restart-aware
     layer only raises the --max-num-seqs ceiling when the target goes above it (`fast_path`).

`decide` books every change it makes (cooldown and restart stamps) as if it were applied; a
driver that does not apply one (Observe, a conflict, a failed write) settles the new state with
`control.actuation.settle`, which keeps what was learnt and drops what was never done.
"""

from __future__ import annotations

from dataclasses import dataclass

from chiron_operator.control.fast_path import (
    decide_ceiling,
    first_target,
    gateway_view,
    judged_size,
    running_cap,
)
from chiron_operator.control.global_scaling import decide_global
from chiron_operator.control.guards import apply_guards, metrics_problem
from chiron_operator.control.local import decide_local, local_signals
from chiron_operator.control.policy import BoundPolicy
from chiron_operator.control.restart import decide_restart
from chiron_operator.core.decision import PoolDecision, RoleDecision, Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PoolSnapshot
from chiron_operator.core.state import ChironState, LocalState, RestartState
from chiron_operator.core.tuning import PoolTuning

POLICY_NAME = "chiron"


@dataclass(frozen=True, slots=True)
class _BatchSizeOutcome:
    applied: Verdict
    target_seqs: int
    local: LocalState
    restart: RestartState


def decide(
    snapshot: PoolSnapshot, tuning: PoolTuning, state: ChironState
) -> tuple[PoolDecision, ChironState]:
    """One control tick of Chiron for a pool."""
    judged = _as_capped(snapshot, tuning, state)
    proposals, observations, global_state = decide_global(judged, tuning, state.global_scaling)
    disabled = _disabled_roles(snapshot, tuning)
    replicas, guard_states = apply_guards(
        snapshot, {**proposals, **disabled}, tuning.role_bounds, tuning.guards, state.guards
    )
    roles: dict[Role, RoleDecision] = {}
    local_states = dict(state.local)
    restart_states = dict(state.restart)
    for role, verdict in replicas.items():
        if role in disabled:
            roles[role] = _disabled_decision(snapshot, role, verdict)
            continue
        outcome = _decide_batch_size(
            snapshot,
            role,
            tuning,
            local_states.get(role, LocalState()),
            restart_states.get(role, RestartState()),
        )
        roles[role] = RoleDecision(role, verdict, outcome.applied, outcome.target_seqs)
        local_states[role] = outcome.local
        restart_states[role] = outcome.restart
    new_state = ChironState(
        local=local_states,
        restart=restart_states,
        guards={**state.guards, **guard_states},
        global_scaling=global_state,
    )
    return PoolDecision(snapshot.now_s, roles, observations), new_state


def _as_capped(snapshot: PoolSnapshot, tuning: PoolTuning, state: ChironState) -> PoolSnapshot:
    """The pool as the global controller judges it: behind a gateway, pods at their caps."""
    if not tuning.fast_path:
        return snapshot
    caps = {}
    for role in snapshot.roles:
        applied, local = _applied_and_local(snapshot, role, tuning, state.local.get(role))
        caps[role] = running_cap(applied, local)
    return gateway_view(snapshot, caps)


def _applied_and_local(
    snapshot: PoolSnapshot, role: Role, tuning: PoolTuning, local: LocalState | None
) -> tuple[int, LocalState]:
    """The --max-num-seqs the role's pods run, and its local memory (behind the gateway, with
    the first cap of a role that has none yet: `fast_path.first_target`)."""
    bounds = tuning.role_bounds(role)
    applied = snapshot.role(role).max_num_seqs or bounds.initial_batch_size_seqs
    state = local or LocalState()
    return applied, first_target(state, applied, bounds) if tuning.fast_path else state


def _disabled_roles(snapshot: PoolSnapshot, tuning: PoolTuning) -> dict[Role, Verdict]:
    """A hold proposal for each role the bounds switched off (max 0) that still has replicas.

    The global controller proposes only for roles the bounds allow, so without this a role
    disabled after its Deployment exists would keep its pods forever. Passing the current size
    through the guard rails lets their last stage, the bounds, take it to 0: the user's
    guarantee wins, as it does for every other role.
    """
    out = {}
    for role in Role:
        current = snapshot.role(role).replicas
        if tuning.role_bounds(role).max_replicas == 0 and current > 0:
            out[role] = Verdict(current, Reason.CLAMPED_TO_MAX, "role disabled (maxReplicas 0)")
    return out


def _disabled_decision(snapshot: PoolSnapshot, role: Role, replicas: Verdict) -> RoleDecision:
    """A disabled role is going away: its batch size is left as it is, never restarted for."""
    seqs = snapshot.role(role).max_num_seqs
    held = Verdict(seqs, Reason.CLAMPED_TO_MAX, f"role disabled (maxReplicas 0): keep {seqs}")
    return RoleDecision(role, replicas, held, seqs)


def _decide_batch_size(
    snapshot: PoolSnapshot,
    role: Role,
    tuning: PoolTuning,
    local_state: LocalState,
    restart_state: RestartState,
) -> _BatchSizeOutcome:
    """Local controller then restart-aware layer for one role."""
    role_snapshot = snapshot.role(role)
    bounds = tuning.role_bounds(role)
    applied_seqs, local_state = _applied_and_local(snapshot, role, tuning, local_state)
    signals = local_signals(role_snapshot, tuning.guards.metrics_staleness_s)
    # Batch instances have no ITL SLO: only throughput backpressure shapes their batch size.
    itl_slo_s = None if role is Role.BATCH else tuning.slo.interactive_itl_s
    # With the gateway the pods run the last target, not the ceiling: judge that size, and
    # let the signals settle after each change (it applied at once; they lag it).
    running_seqs, clock = judged_size(snapshot.now_s, applied_seqs, tuning, local_state)
    target, new_local = decide_local(
        signals, running_seqs, itl_slo_s, bounds, tuning.local, local_state, clock
    )
    out_of_bounds = _clamp_to_bounds(applied_seqs, tuning, role)
    if out_of_bounds is not None:
        return _BatchSizeOutcome(out_of_bounds, target.value, new_local, restart_state)
    problem = metrics_problem(snapshot, role, tuning.guards.metrics_staleness_s)
    if problem is not None and role_snapshot.pods:
        # A restart costs capacity; never pay it on the strength of data we cannot trust.
        reason, message = problem
        held = Verdict(applied_seqs, reason, f"batch size held at {applied_seqs}: {message}")
        return _BatchSizeOutcome(held, target.value, new_local, restart_state)
    applied, new_restart = _restart_layer(
        snapshot.now_s, applied_seqs, target, role, tuning, restart_state, new_local
    )
    return _BatchSizeOutcome(applied, target.value, new_local, new_restart)


def _restart_layer(  # noqa: PLR0917 -- one role's inputs, named
    now_s: float,
    applied_seqs: int,
    target: Verdict,
    role: Role,
    tuning: PoolTuning,
    restart_state: RestartState,
    local: LocalState,
) -> tuple[Verdict, RestartState]:
    """The --max-num-seqs to write: the gateway's ceiling, or a restart to the target."""
    if tuning.fast_path:
        bounds = tuning.role_bounds(role)
        return decide_ceiling(now_s, applied_seqs, target, bounds, tuning.restart, restart_state)
    # Urgent means the ITL SLO itself is breached, even when the halving was clamped at the
    # minimum: users feel that now, so the shorter dwell applies.
    itl_slo_s = None if role is Role.BATCH else tuning.slo.interactive_itl_s
    urgent = (
        itl_slo_s is not None and local.ewma_itl_s is not None and local.ewma_itl_s >= itl_slo_s
    )
    return decide_restart(now_s, applied_seqs, target, urgent, tuning.restart, restart_state)


def _clamp_to_bounds(applied_seqs: int, tuning: PoolTuning, role: Role) -> Verdict | None:
    """Bounds are the user's guarantee: an edited spec is honoured at once, not after a dwell."""
    bounds = tuning.role_bounds(role)
    clamped = min(max(applied_seqs, bounds.min_batch_size_seqs), bounds.max_batch_size_seqs)
    if clamped == applied_seqs:
        return None
    reason = Reason.CLAMPED_TO_MIN if clamped > applied_seqs else Reason.CLAMPED_TO_MAX
    return Verdict(clamped, reason, f"batch size {applied_seqs} outside bounds: set to {clamped}")


def initial_state() -> ChironState:
    """A pool's state before its first tick."""
    return ChironState()


def bound(tuning: PoolTuning) -> BoundPolicy[PoolTuning, ChironState]:
    """Chiron with its tuning bound, for the operator and the simulator."""
    return BoundPolicy(POLICY_NAME, tuning, decide, initial_state())
