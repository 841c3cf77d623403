"""Guard rails around every policy's replica proposals (Chiron's and the baselines').

A policy proposes a desired replica count per role; the guard rails turn it into the value that
is safe to apply. They are small pure stages `(ctx, verdict) -> verdict`, run in this order:

  1. `hold_on_metrics_problem`: signals missing or stale -> hold the current size, both ways.
  2. `respect_pending_capacity`: pods still starting -> a scale-down cancels only unready pods.
  3. `stabilise_scale_down`: go down only to the highest recommendation of the window (HPA).
  4. `cool_down_scale_up`: no scale-up within the cooldown of the last one.
  5. `limit_step`: at most N replicas up or down per tick.
  6. `cap_unschedulable`: pods no node fits for longer than a grace period -> no more than the
     scheduled pods, and no scale-up past them for another grace period.
  7. `clamp_to_bounds`: [min_replicas, max_replicas], last, so the bounds always hold.

Why this order: the holds that protect against bad or incomplete data (1, 2) decide first, so
the later stages work on a value that is already safe to reason about; the time-based damping
(3, 4) comes before the per-tick step (5) so a step never lets a damped move through; the cap
for pods that cannot be placed (6) comes after them, since removing pods that never ran needs
no damping; and the bounds come last because they are the user's guarantee and must win over
everything (a minReplicas the cluster cannot place stays asked for). A stage
that changes the value says so with `Verdict.but`, which keeps the policy's message as context.

Proposals are absolute replica counts. A Deployment's `replicas` already includes the pods that
are starting, so capacity on its way is counted by construction: a proposal of N means N pods in
total, not N more. What the pending-capacity stage adds is the scale-down side: while pods are
starting, Kubernetes removes unready pods first, and the stage stops a scale-down at the ready
count, so a policy that sees the ready pods as idle cannot remove them on account of pods that
have not served yet. The role settles (starting pods become ready or are cancelled) before a
ready pod goes. The flip side: a policy that proposes "current + k" from pressure measured on
ready pods alone will add k again every tick until the new pods serve; such a policy must count
its starting pods itself (the guards cannot tell an increment from an absolute target).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, is_known
from chiron_operator.core.state import GuardState
from chiron_operator.core.tuning import GuardTuning, RoleBounds

BoundsSource = Callable[[Role], RoleBounds] | Mapping[Role, RoleBounds]
Recommendations = tuple[tuple[float, int], ...]

# A role the bounds do not mention may not run, as in PoolTuning.role_bounds.
_NO_BOUNDS = RoleBounds(min_replicas=0, max_replicas=0)
# How long a pod may stay unschedulable before the role stops asking for it. A cluster
# autoscaler adds a node for a pending pod, and a GPU node takes minutes to join (provisioning,
# drivers, a multi-GB image): removing the pod sooner would cancel the very request that makes
# it add one. Keeping it for ever would show "starting" capacity that never comes and fight a
# cluster that has no node to give. After the cap, a scale-up is retried once per this period.
UNSCHEDULABLE_GRACE_S: Final = 600.0


@dataclass(frozen=True, slots=True)
class GuardContext:
    """What every stage may read for one role at one tick.

    `state.recommendations` is already pruned to the stabilisation window (and seeded with the
    current size when the window holds nothing); `problem` is `metrics_problem` for the role.
    """

    role: Role
    snapshot: PoolSnapshot
    bounds: RoleBounds
    tuning: GuardTuning
    state: GuardState
    current: int
    problem: tuple[Reason, str] | None

    @property
    def now_s(self) -> float:
        return self.snapshot.now_s


Stage = Callable[[GuardContext, Verdict], Verdict]


def metrics_problem(
    snapshot: PoolSnapshot, role: Role, staleness_s: float
) -> tuple[Reason, str] | None:
    """(METRICS_MISSING|METRICS_STALE, message) when this role's signals can't be trusted.

    Missing: the source failed (`metrics_error`), or the role has ready pods but none reports
    both running and waiting requests. Stale: the pool's newest sample is older than
    `staleness_s`, or every measured ready pod's sample is. A pool without any pod has nothing
    to measure, and a role without ready pods has no signals of its own to distrust: neither is
    a problem by itself.
    """
    return _pool_problem(snapshot, staleness_s) or _role_problem(snapshot, role, staleness_s)


def _pool_problem(snapshot: PoolSnapshot, staleness_s: float) -> tuple[Reason, str] | None:
    if snapshot.metrics_error:
        return Reason.METRICS_MISSING, f"metrics source failed: {snapshot.metrics_error}"
    if snapshot.all_pods() and snapshot.metrics_age_s > staleness_s:
        age = snapshot.metrics_age_s
        return Reason.METRICS_STALE, (
            f"newest pool sample is {age:.0f} s old (limit {staleness_s:g} s)"
        )
    return None


def _role_problem(
    snapshot: PoolSnapshot, role: Role, staleness_s: float
) -> tuple[Reason, str] | None:
    ready = [p for p in snapshot.role(role).pods if p.ready]
    if not ready:
        return None
    measured = [p for p in ready if _reports_load(p)]
    if not measured:
        return Reason.METRICS_MISSING, (
            f"{len(ready)} ready {role.value} pod(s) but none reports running/waiting requests"
        )
    newest_s = min(p.sample_age_s for p in measured)
    if newest_s > staleness_s:
        return Reason.METRICS_STALE, (
            f"all {len(measured)} measured {role.value} pod(s) have samples older than "
            f"{staleness_s:g} s (newest {newest_s:.0f} s)"
        )
    return None


def _reports_load(pod: PodSignals) -> bool:
    return is_known(pod.running_requests) and is_known(pod.waiting_requests)


def hold_on_metrics_problem(ctx: GuardContext, verdict: Verdict) -> Verdict:
    """Hold the current size, both ways, when the role's signals can't be trusted.

    Never scale on data we cannot see: a missing zero is not an idle pool, and a stale peak is
    not a burst. The reason is set even when the value equals the proposal, so status says the
    decision was made blind. Only `min_replicas` still lifts the value: it is a user guarantee.
    """
    if ctx.problem is None:
        return verdict
    reason, why = ctx.problem
    held = max(ctx.current, ctx.bounds.min_replicas)
    lifted = " (raised to min)" if held > ctx.current else ""
    return verdict.but(held, reason, f"held at {held} replicas{lifted}: {why}")


def respect_pending_capacity(ctx: GuardContext, verdict: Verdict) -> Verdict:
    """While pods are starting, a scale-down removes unready pods only, never ready ones.

    The floor is the ready count: Kubernetes deletes unready pods first, so scaling to it
    cancels exactly the capacity that has not served yet. Scale-ups pass unchanged: the
    proposal is an absolute count and `current` already includes the starting pods.
    """
    role = ctx.snapshot.role(ctx.role)
    unready = max(ctx.current - role.ready_replicas, role.starting_replicas, 0)
    floor = min(ctx.current, role.ready_replicas)
    if unready == 0 or verdict.value >= floor:
        return verdict
    return verdict.but(
        floor,
        Reason.PENDING_CAPACITY,
        f"{unready} replica(s) not ready yet: scale-down to {verdict.value} stops at the "
        f"{floor} ready replica(s), removing only unready ones until the role settles",
    )


def stabilise_scale_down(ctx: GuardContext, verdict: Verdict) -> Verdict:
    """Go down only to the highest recommendation of the stabilisation window (HPA semantics).

    A single low sample cannot shrink the pool; a sustained low one can, once the window has
    forgotten the higher recommendations. The value never rises above `current` here.
    """
    window_s = ctx.tuning.scale_down_stabilization_s
    if verdict.value >= ctx.current or window_s <= 0 or not ctx.state.recommendations:
        return verdict
    highest = max(value for _, value in ctx.state.recommendations)
    floor = min(ctx.current, highest)
    if verdict.value >= floor:
        return verdict
    return verdict.but(
        floor,
        Reason.SCALE_DOWN_STABILIZATION,
        f"scale-down to {verdict.value} held at {floor}: highest recommendation of the last "
        f"{window_s:g} s is {highest}",
    )


def cool_down_scale_up(ctx: GuardContext, verdict: Verdict) -> Verdict:
    """No scale-up within `scale_up_cooldown_s` of the last scale-up of the role."""
    last_s = ctx.state.last_scale_up_s
    if verdict.value <= ctx.current or last_s is None:
        return verdict
    elapsed_s = ctx.now_s - last_s
    cooldown_s = ctx.tuning.scale_up_cooldown_s
    if elapsed_s >= cooldown_s:
        return verdict
    return verdict.but(
        ctx.current,
        Reason.SCALE_UP_COOLDOWN,
        f"scale-up to {verdict.value} held at {ctx.current}: last scale-up {elapsed_s:.0f} s "
        f"ago, cooldown {cooldown_s:g} s",
    )


def limit_step(ctx: GuardContext, verdict: Verdict) -> Verdict:
    """Move at most `max_scale_up_step_replicas` up or `max_scale_down_step_replicas` down."""
    up = ctx.tuning.max_scale_up_step_replicas
    down = ctx.tuning.max_scale_down_step_replicas
    limited = min(max(verdict.value, ctx.current - down), ctx.current + up)
    if limited == verdict.value:
        return verdict
    direction, step = ("up", up) if limited > ctx.current else ("down", down)
    return verdict.but(
        limited,
        Reason.MAX_STEP_LIMITED,
        f"{ctx.current} -> {verdict.value} limited to {limited}: at most {step} {direction} "
        "per tick",
    )


def _unschedulable_past_grace(ctx: GuardContext) -> tuple[int, float] | None:
    """(pods, seconds waited) when the role has pods unschedulable for the grace period."""
    found = ctx.snapshot.unschedulable.get(ctx.role)
    if found is None or found.pods <= 0:
        return None
    waited_s = ctx.now_s - found.since_s
    return (found.pods, waited_s) if waited_s >= UNSCHEDULABLE_GRACE_S else None


def cap_unschedulable(ctx: GuardContext, verdict: Verdict) -> Verdict:
    """No more replicas than were scheduled, once pods have waited the grace for a node.

    Within the grace nothing changes: a cluster autoscaler may be adding a node. Past it, the
    role is capped at its scheduled pods (the pending ones go first: Kubernetes removes pods
    without a node before any other), and scale-ups past the current size wait another grace
    period (`GuardState.unschedulable_retry_s`), so a cluster that never fits the pod is asked
    again once per period rather than every tick.
    """
    stuck = _unschedulable_past_grace(ctx)
    if stuck is not None:
        pods, waited_s = stuck
        scheduled = max(0, ctx.current - pods)
        if verdict.value <= scheduled:
            return verdict
        return verdict.but(
            scheduled,
            Reason.UNSCHEDULABLE,
            f"{pods} {ctx.role.value} pod(s) unschedulable for {waited_s:.0f} s (grace "
            f"{UNSCHEDULABLE_GRACE_S:g} s): capped at the {scheduled} scheduled replica(s)",
        )
    retry_s = ctx.state.unschedulable_retry_s
    if retry_s is None or ctx.now_s >= retry_s or verdict.value <= ctx.current:
        return verdict
    return verdict.but(
        ctx.current,
        Reason.UNSCHEDULABLE,
        f"scale-up to {verdict.value} held at {ctx.current}: {ctx.role.value} pods found no "
        f"node recently, next try in {retry_s - ctx.now_s:.0f} s",
    )


def clamp_to_bounds(ctx: GuardContext, verdict: Verdict) -> Verdict:
    """Clamp to [min_replicas, max_replicas]; max wins if a misconfigured min exceeds it.

    max_replicas is the hard cap (GPUs are finite), so it is the one that always holds.
    """
    high = ctx.bounds.max_replicas
    low = min(ctx.bounds.min_replicas, high)
    if verdict.value < low:
        return verdict.but(low, Reason.CLAMPED_TO_MIN, f"{verdict.value} raised to min {low}")
    if verdict.value > high:
        return verdict.but(high, Reason.CLAMPED_TO_MAX, f"{verdict.value} lowered to max {high}")
    return verdict


STAGES: tuple[Stage, ...] = (
    hold_on_metrics_problem,
    respect_pending_capacity,
    stabilise_scale_down,
    cool_down_scale_up,
    limit_step,
    cap_unschedulable,
    clamp_to_bounds,
)


def run_stages(ctx: GuardContext, proposal: Verdict, stages: tuple[Stage, ...] = STAGES) -> Verdict:
    """Pass a proposal through the stages in order."""
    verdict = proposal
    for stage in stages:
        verdict = stage(ctx, verdict)
    return verdict


def guard_context(
    snapshot: PoolSnapshot,
    role: Role,
    bounds: RoleBounds,
    tuning: GuardTuning,
    state: GuardState,
) -> GuardContext:
    """The stages' view of one role: the window pruned and, when empty, seeded with `current`.

    Seeding is HPA's own rule (its first recommendation is the current size), and it also
    covers a window emptied by a metrics outage: with no trustworthy recommendation in the
    window there is no evidence that the current size is too large, so it has to age out first.
    """
    now_s = snapshot.now_s
    current = snapshot.role(role).replicas
    window_s = tuning.scale_down_stabilization_s
    recent = _prune(state.recommendations, now_s, window_s)
    if not recent and window_s > 0:
        recent = ((now_s, current),)
    problem = metrics_problem(snapshot, role, tuning.metrics_staleness_s)
    pruned = replace(state, recommendations=recent)
    return GuardContext(role, snapshot, bounds, tuning, pruned, current, problem)


def next_state(ctx: GuardContext, proposal: Verdict, final: Verdict) -> GuardState:
    """Guard memory after a tick: scale times and the window of raw recommendations.

    The raw proposal is remembered (as HPA remembers its unstabilised recommendation), but not
    while the metrics can't be trusted: a proposal computed from missing data is no evidence.
    """
    recent = ctx.state.recommendations
    if ctx.problem is None and ctx.tuning.scale_down_stabilization_s > 0:
        recent = _remember(recent, ctx.now_s, proposal.value)
    retry_s = ctx.state.unschedulable_retry_s
    if _unschedulable_past_grace(ctx) is not None:
        retry_s = ctx.now_s + UNSCHEDULABLE_GRACE_S
    elif retry_s is not None and retry_s <= ctx.now_s:
        retry_s = None
    return GuardState(
        last_scale_up_s=ctx.now_s if final.value > ctx.current else ctx.state.last_scale_up_s,
        last_scale_down_s=ctx.now_s if final.value < ctx.current else ctx.state.last_scale_down_s,
        recommendations=recent,
        unschedulable_retry_s=retry_s,
    )


def apply_guards(
    snapshot: PoolSnapshot,
    proposals: Mapping[Role, Verdict],
    bounds: BoundsSource,
    tuning: GuardTuning,
    states: Mapping[Role, GuardState],
) -> tuple[dict[Role, Verdict], dict[Role, GuardState]]:
    """Guarded verdicts and new guard states for every role in `proposals`.

    `bounds` is a lookup (e.g. `PoolTuning.role_bounds`) or a mapping, where a missing role may
    not run (max 0). Roles absent from `proposals` are not touched and get no new state. Every
    returned value lies within the role's bounds.
    """
    bounds_of = _bounds_lookup(bounds)
    verdicts: dict[Role, Verdict] = {}
    new_states: dict[Role, GuardState] = {}
    for role, proposal in proposals.items():
        state = states.get(role, GuardState())
        ctx = guard_context(snapshot, role, bounds_of(role), tuning, state)
        final = run_stages(ctx, proposal)
        verdicts[role] = final
        new_states[role] = next_state(ctx, proposal, final)
    return verdicts, new_states


def _bounds_lookup(bounds: BoundsSource) -> Callable[[Role], RoleBounds]:
    if isinstance(bounds, Mapping):
        table = bounds
        return lambda role: table.get(role, _NO_BOUNDS)
    return bounds


def _prune(recent: Recommendations, now_s: float, window_s: float) -> Recommendations:
    # Entries from the future belong to another clock (a restarted simulation): drop them.
    return tuple((t, v) for t, v in recent if now_s - window_s < t <= now_s)


def _remember(recent: Recommendations, now_s: float, value: int) -> Recommendations:
    # An older entry no higher than a newer one can never be the window's maximum again (the
    # newer one outlives it), so dropping it keeps the persisted window short and the max exact.
    kept = tuple((t, v) for t, v in recent if v > value)
    return (*kept, (now_s, value))
