"""Chiron's global autoscaler: instance counts per role from interactive and batch backpressure.

Raw proposals only: bounds, steps, cooldowns, pending pods and stale-metric holds are the guard
rails' job afterwards. The rules stay conservative on their own, though: what cannot be seen is
never read as idle, and no rule scales a role down on a missing signal.

Interactive (IBP = busy / sampled interactive+mixed instances): above the band, add mixed
instances; below it, remove an interactive instance, or a mixed one once interactive sits at its
min. Batch (BBP from the CLT waiting-time bound): add batch instances only while deadlines are at
risk and mixed instances have no idle capacity to absorb the work; remove one while every
deadline would still hold without it, with a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chiron_operator.control.waiting_time import BatchAssessment, assess_batch
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, is_known
from chiron_operator.core.state import GlobalState
from chiron_operator.core.tuning import PoolTuning

# Absorbs float noise in ceil(): 0.65 * 20 must need 13 instances, not 14.
_CEIL_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class _BatchContext:
    """What the batch rule needs beyond the snapshot, computed once per tick."""

    assessment: BatchAssessment
    throughput_tokens_per_s: float
    instance_tokens_per_s: float
    mixed_utilization_ratio: float  # NaN when no mixed pod has a fresh load sample


def decide_global(
    snapshot: PoolSnapshot, tuning: PoolTuning, state: GlobalState
) -> tuple[dict[Role, Verdict], dict[str, float], GlobalState]:
    """Desired replicas per role (before guard rails), observations named with units, new state.

    Every role the bounds allow (max_replicas > 0) gets a verdict; proposals are never negative.
    """
    staleness_s = tuning.guards.metrics_staleness_s
    busy, sampled = interactive_backpressure_counts(
        snapshot, tuning.global_scaling.busy_running_ratio, staleness_s
    )
    new_state = _update_instance_estimate(snapshot, tuning, state)
    context = _batch_context(snapshot, tuning, new_state)
    proposals = _decide_interactive(snapshot, tuning, busy, sampled)
    if _allowed(tuning, Role.BATCH):
        proposals[Role.BATCH] = _decide_batch(snapshot, tuning, context)
    ibp = busy / sampled if sampled else math.nan
    observations = {
        "interactive_backpressure_ratio": ibp,
        "busy_instances": float(busy),
        "sampled_instances": float(sampled),
        "batch_backpressure_ratio": context.assessment.backpressure_ratio,
        "batch_required_tokens_per_s": context.assessment.required_throughput_tokens_per_s,
        "batch_throughput_tokens_per_s": context.throughput_tokens_per_s,
        "batch_instance_tokens_per_s": context.instance_tokens_per_s,
        "batch_worst_slack_s": context.assessment.worst_slack_s,
        "batch_queued_requests": float(snapshot.batch_queue.queued_requests),
        "mixed_utilization_ratio": context.mixed_utilization_ratio,
    }
    return proposals, observations, new_state


def _allowed(tuning: PoolTuning, role: Role) -> bool:
    return tuning.role_bounds(role).max_replicas > 0


def _fresh_pods(snapshot: PoolSnapshot, role: Role, staleness_s: float) -> list[PodSignals]:
    return [p for p in snapshot.role(role).pods if p.ready and p.sample_age_s <= staleness_s]


def _interactive_load(pod: PodSignals) -> tuple[float, float]:
    """(running, waiting) interactive requests; the totals stand in when the split is unknown.

    Counting a mixed pod's batch load as interactive errs towards 'busy', i.e. towards capacity.
    """
    running = pod.interactive_running_requests
    waiting = pod.interactive_waiting_requests
    if not is_known(running):
        running = pod.running_requests
    if not is_known(waiting):
        waiting = pod.waiting_requests
    return running, waiting


def is_busy(pod: PodSignals, busy_running_ratio: float) -> bool | None:
    """Whether interactive load fills the pod (or waits); None when the pod reports no load."""
    running, waiting = _interactive_load(pod)
    if not (is_known(running) or is_known(waiting)):
        return None
    full = is_known(running) and running >= busy_running_ratio * max(pod.max_num_seqs, 1)
    queued = is_known(waiting) and waiting > 0
    return bool(full or queued)


def interactive_backpressure_counts(
    snapshot: PoolSnapshot, busy_running_ratio: float, staleness_s: float
) -> tuple[int, int]:
    """(busy, sampled) over ready interactive and mixed pods with a fresh load sample."""
    pods = _fresh_pods(snapshot, Role.INTERACTIVE, staleness_s)
    pods += _fresh_pods(snapshot, Role.MIXED, staleness_s)
    flags = [f for f in (is_busy(p, busy_running_ratio) for p in pods) if f is not None]
    return sum(flags), len(flags)


def _hold_all(
    snapshot: PoolSnapshot, roles: list[Role], reason: Reason, why: str
) -> dict[Role, Verdict]:
    return {
        r: Verdict(snapshot.role(r).replicas, reason, f"{why}: hold {snapshot.role(r).replicas}")
        for r in roles
    }


def _decide_interactive(
    snapshot: PoolSnapshot, tuning: PoolTuning, busy: int, sampled: int
) -> dict[Role, Verdict]:
    """IBP band rule over the interactive and mixed roles the bounds allow."""
    roles = [r for r in (Role.INTERACTIVE, Role.MIXED) if _allowed(tuning, r)]
    if not roles:
        return {}
    if sampled == 0:
        why = "no ready interactive or mixed pod has a fresh load sample"
        return _hold_all(snapshot, roles, Reason.METRICS_MISSING, why)
    knobs = tuning.global_scaling
    ibp = busy / sampled
    summary = f"interactive backpressure {ibp:.2f}"
    counts = f"({busy} of {sampled} instances busy)"
    if ibp > knobs.ibp_high_ratio:
        why = f"{summary} > {knobs.ibp_high_ratio:.2f} {counts}"
        return _scale_out_interactive(snapshot, tuning, roles, busy, sampled, why=why)
    if ibp < knobs.ibp_low_ratio:
        why = f"{summary} < {knobs.ibp_low_ratio:.2f} {counts}"
        return _scale_in_interactive(snapshot, tuning, roles, busy, sampled, why=why)
    why = f"{summary} in [{knobs.ibp_low_ratio:.2f}, {knobs.ibp_high_ratio:.2f}] {counts}"
    return _hold_all(snapshot, roles, Reason.INTERACTIVE_BACKPRESSURE_IN_BAND, why)


def _scale_out_interactive(
    snapshot: PoolSnapshot,
    tuning: PoolTuning,
    roles: list[Role],
    busy: int,
    sampled: int,
    *,
    why: str,
) -> dict[Role, Verdict]:
    """Add mixed instances (interactive if mixed is not allowed), net of capacity on its way."""
    knobs = tuning.global_scaling
    # Mixed instances keep the new headroom useful: batch fills it until interactive needs it.
    role = Role.MIXED if Role.MIXED in roles else Role.INTERACTIVE
    mid = (knobs.ibp_low_ratio + knobs.ibp_high_ratio) / 2
    wanted = _instances_to_add(busy, sampled, mid)
    # Pods already requested but not sampled yet (starting, or not yet scheduled) are capacity
    # on its way: without netting them out, every tick of a cold start would add again.
    pending = sum(snapshot.role(r).replicas for r in roles) - sampled
    add = wanted - max(0, pending)
    if add <= 0:
        message = f"{why}: {pending} instance(s) already starting cover the {wanted} needed"
        return _hold_all(snapshot, roles, Reason.PENDING_CAPACITY, message)
    verdicts = _hold_all(snapshot, roles, Reason.INTERACTIVE_BACKPRESSURE_HIGH, why)
    current = snapshot.role(role).replicas
    message = f"{why}: add {add} {role.value} (to reach {mid:.2f})"
    verdicts[role] = Verdict(current + add, Reason.INTERACTIVE_BACKPRESSURE_HIGH, message)
    return verdicts


def _instances_to_add(busy: int, sampled: int, target_ratio: float) -> int:
    """Instances that bring busy/total down to the target if busy load spreads evenly."""
    if target_ratio <= 0:
        return 1
    return max(1, math.ceil(busy / target_ratio - sampled - _CEIL_EPS))


def _scale_in_interactive(
    snapshot: PoolSnapshot,
    tuning: PoolTuning,
    roles: list[Role],
    busy: int,
    sampled: int,
    *,
    why: str,
) -> dict[Role, Verdict]:
    """Remove one interactive instance, else one mixed instance, else say why not."""
    reason = Reason.INTERACTIVE_BACKPRESSURE_LOW
    projected = _projected_backpressure_without_one(snapshot, tuning)
    if projected > tuning.global_scaling.ibp_high_ratio:
        # The freed load spreads over the rest; if that makes them busy it would flap back.
        return _hold_all(snapshot, roles, reason, f"{why}, but {projected:.2f} without one")
    victim, note = _scale_in_victim(snapshot, tuning, roles)
    if victim is None:
        return _hold_all(snapshot, roles, reason, f"{why}; {note}")
    verdicts = _hold_all(snapshot, roles, reason, why)
    current = snapshot.role(victim).replicas
    message = f"{why}: remove 1 {victim.value}"
    verdicts[victim] = Verdict(current - 1, reason, message)
    return verdicts


def _projected_backpressure_without_one(snapshot: PoolSnapshot, tuning: PoolTuning) -> float:
    """IBP if one instance went and its interactive load spread evenly over the others.

    Keeping the busy count fixed would be wrong: the survivors' load grows by n/(n-1), and a
    pool just under the busy threshold would then be removed, overloaded, and re-grown forever.
    """
    staleness_s = tuning.guards.metrics_staleness_s
    pods = _fresh_pods(snapshot, Role.INTERACTIVE, staleness_s)
    pods += _fresh_pods(snapshot, Role.MIXED, staleness_s)
    loads = [_interactive_load(p) for p in pods]
    known = [(p, r, w) for p, (r, w) in zip(pods, loads, strict=True) if is_known(r)]
    if len(known) <= 1:
        return 0.0 if not known or known[0][1] == 0 else math.inf
    growth = len(known) / (len(known) - 1)
    ratio = tuning.global_scaling.busy_running_ratio
    busy = sum(
        1
        for pod, running, waiting in known
        if (running + (waiting if is_known(waiting) else 0.0)) * growth
        >= ratio * max(pod.max_num_seqs, 1)
    )
    return busy / (len(known) - 1)


def _scale_in_victim(
    snapshot: PoolSnapshot, tuning: PoolTuning, roles: list[Role]
) -> tuple[Role | None, str]:
    """The role to lose an instance, or None and why no role may."""

    def above_min(role: Role) -> bool:
        floor = tuning.role_bounds(role).min_replicas
        return role in roles and snapshot.role(role).replicas > floor

    if above_min(Role.INTERACTIVE):
        return Role.INTERACTIVE, ""
    if not above_min(Role.MIXED):
        return None, "interactive and mixed at their min"
    if _batch_needs_mixed(snapshot, tuning.guards.metrics_staleness_s):
        return None, "interactive at its min, and mixed carry batch work no batch instance takes"
    return Role.MIXED, ""


def _batch_needs_mixed(snapshot: PoolSnapshot, staleness_s: float) -> bool:
    """Whether removing a mixed instance could strand batch work.

    Batch work has somewhere else to go when a batch instance is ready (the batch rule then
    sizes the batch role for it). Otherwise any batch work counts: queued requests, or batch
    requests running on mixed pods. What cannot be seen (a stale queue, a mixed pod whose load
    is not split by class or not reported) is assumed to be batch work.
    """
    if snapshot.role(Role.BATCH).ready_replicas > 0:
        return False
    queue = snapshot.batch_queue
    if queue.sample_age_s > staleness_s or queue.queued_requests > 0:
        return True
    mixed = snapshot.role(Role.MIXED)
    fresh = _fresh_pods(snapshot, Role.MIXED, staleness_s)
    if len(fresh) < mixed.ready_replicas:
        return True
    return any(_batch_running(p) != 0.0 for p in fresh)  # NaN (unsplit) counts as work


def _batch_running(pod: PodSignals) -> float:
    """Batch requests running on a pod; NaN when the source does not split by class."""
    if not (is_known(pod.running_requests) and is_known(pod.interactive_running_requests)):
        return math.nan
    return max(0.0, pod.running_requests - pod.interactive_running_requests)


def _update_instance_estimate(
    snapshot: PoolSnapshot, tuning: PoolTuning, state: GlobalState
) -> GlobalState:
    """EWMA of what one saturated batch instance generates (tokens/s).

    Only saturated pods measure capacity (an unsaturated one reports its load), and a saturated
    pod generating nothing is stalled, not slow, so it is left out too.
    """
    threshold = tuning.local.saturation_ratio
    samples = [
        p.generation_tokens_per_s
        for p in _fresh_pods(snapshot, Role.BATCH, tuning.guards.metrics_staleness_s)
        if is_known(p.generation_tokens_per_s)
        and p.generation_tokens_per_s > 0
        and _saturated(p, threshold)
    ]
    if not samples:
        return state
    sample = sum(samples) / len(samples)
    old = state.batch_instance_tokens_per_s
    weight = tuning.global_scaling.throughput_ewma_weight_ratio
    estimate = sample if old is None or old <= 0 else weight * sample + (1 - weight) * old
    return GlobalState(batch_instance_tokens_per_s=estimate)


def _saturated(pod: PodSignals, threshold_ratio: float) -> bool:
    full = is_known(pod.running_requests) and (
        pod.running_requests >= threshold_ratio * max(pod.max_num_seqs, 1)
    )
    return full or (is_known(pod.waiting_requests) and pod.waiting_requests > 0)


def _batch_throughput(snapshot: PoolSnapshot, staleness_s: float) -> float:
    """Token throughput batch work gets now (tokens/s).

    Batch pods give it all they generate. A mixed pod gives it its generation rate apportioned by
    the batch share of its running requests: the spare capacity batch actually fills. When the
    source cannot split a mixed pod's load by class, the pod counts for nothing, since all of its
    output may be interactive; under-counting errs towards deadlines, not cost.
    """
    total = sum(
        p.generation_tokens_per_s
        for p in _fresh_pods(snapshot, Role.BATCH, staleness_s)
        if is_known(p.generation_tokens_per_s)
    )
    for pod in _fresh_pods(snapshot, Role.MIXED, staleness_s):
        batch = _batch_running(pod)
        if is_known(batch) and is_known(pod.generation_tokens_per_s) and pod.running_requests > 0:
            total += pod.generation_tokens_per_s * batch / pod.running_requests
    return total


def _mixed_utilization(snapshot: PoolSnapshot, staleness_s: float) -> float:
    """Mean running/max-num-seqs over fresh mixed pods (all classes); NaN when none reports."""
    ratios = [
        p.running_requests / max(p.max_num_seqs, 1)
        for p in _fresh_pods(snapshot, Role.MIXED, staleness_s)
        if is_known(p.running_requests)
    ]
    return sum(ratios) / len(ratios) if ratios else math.nan


def _batch_context(snapshot: PoolSnapshot, tuning: PoolTuning, state: GlobalState) -> _BatchContext:
    staleness_s = tuning.guards.metrics_staleness_s
    throughput = _batch_throughput(snapshot, staleness_s)
    estimate = state.batch_instance_tokens_per_s
    if estimate is None or estimate <= 0:
        estimate = tuning.global_scaling.batch_instance_prior_tokens_per_s
    assessment = assess_batch(
        snapshot.batch_queue, snapshot.now_s, throughput, tuning.global_scaling.waiting_time_z
    )
    utilization = _mixed_utilization(snapshot, staleness_s)
    return _BatchContext(assessment, throughput, estimate, utilization)


def _decide_batch(snapshot: PoolSnapshot, tuning: PoolTuning, context: _BatchContext) -> Verdict:
    """Batch rule, in order: stale queue, empty queue, unknown lengths, at risk, safe, hold."""
    current = snapshot.role(Role.BATCH).replicas
    queue = snapshot.batch_queue
    staleness_s = tuning.guards.metrics_staleness_s
    if queue.sample_age_s > staleness_s:
        why = f"batch queue sample {queue.sample_age_s:.0f} s old (> {staleness_s:.0f} s)"
        return Verdict(current, Reason.METRICS_MISSING, f"{why}: hold {current} batch")
    if queue.queued_requests == 0:
        floor = tuning.role_bounds(Role.BATCH).min_replicas
        return Verdict(
            floor, Reason.BATCH_QUEUE_EMPTY, f"batch queue empty: batch to its min {floor}"
        )
    assessment = context.assessment
    if math.isnan(assessment.backpressure_ratio):
        return _unknown_lengths(snapshot, current)
    knobs = tuning.global_scaling
    if assessment.backpressure_ratio > knobs.bbp_threshold_ratio:
        return _batch_at_risk(snapshot, tuning, context)
    margin = knobs.batch_scale_down_margin_ratio
    without_one = context.throughput_tokens_per_s - context.instance_tokens_per_s
    needed = assessment.required_throughput_tokens_per_s / margin if margin > 0 else math.inf
    bbp = f"batch backpressure {assessment.backpressure_ratio:.2f}"
    floor = tuning.role_bounds(Role.BATCH).min_replicas
    if current > floor and without_one >= needed:
        message = (
            f"{bbp}: deadlines hold within {margin:.0%} of time left with one instance fewer "
            f"({without_one:.0f} >= {needed:.0f} tokens/s): remove 1 batch"
        )
        return Verdict(current - 1, Reason.BATCH_DEADLINES_SAFE, message)
    why_not = (
        f"at its min {floor}"
        if current <= floor
        else f"one fewer leaves {max(without_one, 0.0):.0f} < {needed:.0f} tokens/s"
    )
    message = (
        f"{bbp} <= {knobs.bbp_threshold_ratio:.2f}, worst slack {assessment.worst_slack_s:.0f} s,"
        f" {why_not}: hold {current} batch"
    )
    return Verdict(current, Reason.NO_CHANGE, message)


def _unknown_lengths(snapshot: PoolSnapshot, current: int) -> Verdict:
    """No length statistics yet: hold, unless nothing serves batch and none could ever arrive."""
    queued = snapshot.batch_queue.queued_requests
    why = f"batch output lengths unknown ({queued} requests queued)"
    if current == 0 and snapshot.role(Role.MIXED).replicas == 0:
        # Statistics come from completed requests: without an instance they never would.
        message = f"{why} and no batch or mixed instance to serve them: start 1 batch"
        return Verdict(1, Reason.BATCH_DEADLINES_AT_RISK, message)
    return Verdict(current, Reason.METRICS_MISSING, f"{why}: hold {current} batch")


def _batch_at_risk(snapshot: PoolSnapshot, tuning: PoolTuning, context: _BatchContext) -> Verdict:
    """Deadlines at risk: mixed spare capacity absorbs it first, else add batch instances."""
    current = snapshot.role(Role.BATCH).replicas
    assessment = context.assessment
    theta = context.throughput_tokens_per_s
    required = assessment.required_throughput_tokens_per_s
    # Overdue groups need infinite throughput; size for the groups capacity can still save.
    need = required if math.isfinite(required) else assessment.open_required_throughput_tokens_per_s
    why = (
        f"batch backpressure {assessment.backpressure_ratio:.2f} > "
        f"{tuning.global_scaling.bbp_threshold_ratio:.2f} ({assessment.groups_at_risk} of "
        f"{assessment.groups} groups at risk, need {need:.0f} tokens/s, have {theta:.0f})"
    )
    utilization = context.mixed_utilization_ratio
    idle_below = 1 - tuning.global_scaling.mixed_idle_ratio
    if snapshot.role(Role.MIXED).replicas > 0 and utilization < idle_below:
        message = (
            f"{why}, but mixed instances are {utilization:.0%} busy (< {idle_below:.0%}): "
            f"hold {current} batch, mixed absorbs it"
        )
        return Verdict(current, Reason.BATCH_ABSORBED_BY_MIXED, message)
    per_instance = context.instance_tokens_per_s
    add = max(1, math.ceil((need - theta) / per_instance - _CEIL_EPS))
    message = f"{why}: add {add} batch at {per_instance:.0f} tokens/s each"
    return Verdict(current + add, Reason.BATCH_DEADLINES_AT_RISK, message)
