"""Batch backpressure: size the batch role from the CLT waiting-time bound against deadlines.

Add batch instances only while deadlines are at risk and mixed instances have no idle capacity
to absorb the work; remove one while every deadline would still hold without it, with a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from chiron_operator.control.pool_view import (
    CEIL_EPS,
    batch_running,
    fresh_pods,
    mixed_utilization,
)
from chiron_operator.control.startup import startup_s
from chiron_operator.control.waiting_time import BatchAssessment, assess_batch
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import BatchQueue, PodSignals, PoolSnapshot, is_known
from chiron_operator.core.state import GlobalState
from chiron_operator.core.tuning import PoolTuning


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What the batch rule needs beyond the snapshot, computed once per tick."""

    assessment: BatchAssessment
    throughput_tokens_per_s: float
    instance_tokens_per_s: float
    mixed_utilization_ratio: float  # NaN when no mixed pod has a fresh load sample
    startup_s: float = 0.0
    lengths_from_prior: bool = False


def update_instance_estimate(
    snapshot: PoolSnapshot, tuning: PoolTuning, state: GlobalState
) -> GlobalState:
    """EWMA of what one saturated batch instance generates (tokens/s).

    Only saturated pods measure capacity (an unsaturated one reports its load), and a saturated
    pod generating nothing is stalled, not slow, so it is left out too.
    """
    threshold = tuning.local.saturation_ratio
    samples = [
        p.generation_tokens_per_s
        for p in fresh_pods(snapshot, Role.BATCH, tuning.guards.metrics_staleness_s)
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
    return replace(state, batch_instance_tokens_per_s=estimate)


def _saturated(pod: PodSignals, threshold_ratio: float) -> bool:
    full = is_known(pod.running_requests) and (
        pod.running_requests >= threshold_ratio * max(pod.max_num_seqs, 1)
    )
    return full or (is_known(pod.waiting_requests) and pod.waiting_requests > 0)


def _batch_throughput(
    snapshot: PoolSnapshot, staleness_s: float, measured_instance_tokens_per_s: float | None
) -> float:
    """Token throughput batch work gets now (tokens/s).

    Batch pods give it all they generate, and at least what a saturated batch instance was
    measured to generate: a batch pod serves nothing else, so with work queued it runs at that
    rate, while its windowed rate after an idle spell reads its past demand (a backlog arriving
    at an idle pod looked ten times slower to drain than it was, and added instances it did
    not need). The prior is not used for this: only a measured estimate.

    A mixed pod gives it its generation rate apportioned by the batch share of its running
    requests: the spare capacity batch actually fills. When the
    source cannot split a mixed pod's load by class, the pod counts for nothing, since all of its
    output may be interactive; under-counting errs towards deadlines, not cost.
    """
    floor = measured_instance_tokens_per_s or 0.0
    total = 0.0
    for pod in fresh_pods(snapshot, Role.BATCH, staleness_s):
        rate = pod.generation_tokens_per_s if is_known(pod.generation_tokens_per_s) else 0.0
        total += max(rate, floor)
    for pod in fresh_pods(snapshot, Role.MIXED, staleness_s):
        batch = batch_running(pod)
        if is_known(batch) and is_known(pod.generation_tokens_per_s) and pod.running_requests > 0:
            total += pod.generation_tokens_per_s * batch / pod.running_requests
    return total


def instance_tokens_per_s(tuning: PoolTuning, state: GlobalState) -> float:
    """What one saturated batch instance generates (tokens/s): the measured EWMA, or the
    configured prior until a saturated batch pod has been seen."""
    estimate = state.batch_instance_tokens_per_s
    if estimate is None or estimate <= 0:
        return tuning.global_scaling.batch_instance_prior_tokens_per_s
    return estimate


def batch_context(snapshot: PoolSnapshot, tuning: PoolTuning, state: GlobalState) -> BatchContext:
    staleness_s = tuning.guards.metrics_staleness_s
    throughput = _batch_throughput(snapshot, staleness_s, state.batch_instance_tokens_per_s)
    estimate = instance_tokens_per_s(tuning, state)
    queue, prior = _with_length_prior(snapshot.batch_queue, tuning)
    assessment = assess_batch(
        queue, snapshot.now_s, throughput, tuning.global_scaling.waiting_time_z
    )
    utilization = mixed_utilization(snapshot, staleness_s)
    started = startup_s(tuning, state)
    return BatchContext(assessment, throughput, estimate, utilization, started, prior)


PRIOR_SAMPLES: Final = 4.0
"""How many completions the output-length prior weighs like: the waiting-time bound's term for
the mean's error (z * sigma * n / sqrt(m)) then doubles the prior's mean at z = 2.33."""

MEASURED_SAMPLES: Final = 30.0
"""Completions before measured lengths stand alone: the first to complete are the short ones."""


def _with_length_prior(queue: BatchQueue, tuning: PoolTuning) -> tuple[BatchQueue, bool]:
    """The queue with lengths no shorter than the prior's until `MEASURED_SAMPLES` completed.

    Holding until one completes cost a pool's first backlog its deadline: 3,020 requests due
    in 12 minutes waited 8.5 of them for a first completion before any batch instance was
    added. And the first completions of a backlog are its shortest requests: their mean
    (a tenth of the backlog's on a 70B pool) sized the batch role for a fraction of its work.
    So until enough have completed, the mean and spread are at least the prior's (spread as
    wide as its mean), counted as `PRIOR_SAMPLES` completions when none has: about twice the
    prior's mean per request in the bound.
    """
    samples = queue.output_tokens_samples
    measured = is_known(queue.output_tokens_mean) and is_known(queue.output_tokens_std)
    if not queue.groups or (measured and samples >= MEASURED_SAMPLES):
        return queue, False
    prior = tuning.global_scaling.batch_output_tokens_prior
    if not measured or not samples > 0:
        return replace(
            queue,
            output_tokens_mean=prior,
            output_tokens_std=prior,
            output_tokens_samples=PRIOR_SAMPLES,
        ), True
    mean = max(queue.output_tokens_mean, prior)
    std = max(queue.output_tokens_std, prior)
    return replace(queue, output_tokens_mean=mean, output_tokens_std=std), True


def decide_batch(snapshot: PoolSnapshot, tuning: PoolTuning, context: BatchContext) -> Verdict:
    """Batch rule, in order: stale queue, empty queue, unknown lengths, at risk, safe, hold."""
    current = snapshot.role(Role.BATCH).replicas
    queue = snapshot.batch_queue
    staleness_s = tuning.guards.metrics_staleness_s
    if queue.sample_age_s > staleness_s:
        why = f"batch queue sample {queue.sample_age_s:.0f} s old (> {staleness_s:.0f} s)"
        return Verdict(current, Reason.METRICS_MISSING, f"{why}: hold {current} batch")
    if queue.queued_requests == 0:
        return _queue_empty(snapshot, tuning)
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


def _queue_empty(snapshot: PoolSnapshot, tuning: PoolTuning) -> Verdict:
    """Nothing queued: batch to its min, but not below the batch pods still running work.

    The last requests of a backlog run for minutes on a 70B pool; a pod removed under them
    aborts them after its grace period and they go back to the queue, late (a backlog due in
    18 minutes met 59% of its deadlines with its pods removed that way, 65% with them kept).
    Pods go least loaded first (pod-deletion-cost), so keeping as many as still run something
    keeps those.
    """
    floor = tuning.role_bounds(Role.BATCH).min_replicas
    staleness_s = tuning.guards.metrics_staleness_s
    role = snapshot.role(Role.BATCH)
    fresh = fresh_pods(snapshot, Role.BATCH, staleness_s)
    unseen = role.ready_replicas - len(fresh)
    busy = sum(1 for p in fresh if not (is_known(p.running_requests) and p.running_requests <= 0))
    # A ready pod without a fresh sample may still run work: it is kept like a busy one.
    working = busy + max(0, unseen)
    if working <= floor:
        return Verdict(
            floor, Reason.BATCH_QUEUE_EMPTY, f"batch queue empty: batch to its min {floor}"
        )
    message = (
        f"batch queue empty, but {working} batch pod(s) still run batch work: keep {working} "
        f"until they finish"
    )
    return Verdict(min(working, role.replicas), Reason.BATCH_QUEUE_EMPTY, message)


def _unknown_lengths(snapshot: PoolSnapshot, current: int) -> Verdict:
    """The bound is unknown (the lengths have the prior, so the throughput was): hold."""
    queued = snapshot.batch_queue.queued_requests
    why = f"batch waiting time unknown ({queued} requests queued)"
    return Verdict(current, Reason.METRICS_MISSING, f"{why}: hold {current} batch")


def _batch_at_risk(snapshot: PoolSnapshot, tuning: PoolTuning, context: BatchContext) -> Verdict:
    """Deadlines at risk: mixed spare capacity absorbs it first, else add batch instances."""
    current = snapshot.role(Role.BATCH).replicas
    assessment = context.assessment
    theta = context.throughput_tokens_per_s
    why = _at_risk_why(tuning, context)
    utilization = context.mixed_utilization_ratio
    idle_below = 1 - tuning.global_scaling.mixed_idle_ratio
    if snapshot.role(Role.MIXED).replicas > 0 and utilization < idle_below:
        message = (
            f"{why}, but mixed instances are {utilization:.0%} busy (< {idle_below:.0%}): "
            f"hold {current} batch, mixed absorbs it"
        )
        return Verdict(current, Reason.BATCH_ABSORBED_BY_MIXED, message)
    per_instance = context.instance_tokens_per_s
    instances = instances_in_time(assessment, theta, per_instance, context.startup_s)
    # A vanishing per-instance estimate makes the count unbounded: ask for the role's max and
    # let the guard rails step towards it.
    ceiling = tuning.role_bounds(Role.BATCH).max_replicas
    wanted = max(1, math.ceil(instances - CEIL_EPS)) if math.isfinite(instances) else ceiling
    # Batch pods requested but not yet measured deliver soon; adding for them again every tick
    # of a multi-minute cold start would overshoot.
    staleness_s = tuning.guards.metrics_staleness_s
    pending = max(0, current - len(fresh_pods(snapshot, Role.BATCH, staleness_s)))
    add = wanted - pending
    if add <= 0:
        message = f"{why}: {pending} batch instance(s) already starting cover the {wanted} needed"
        return Verdict(current, Reason.PENDING_CAPACITY, message)
    message = (
        f"{why}: add {add} batch at {per_instance:.0f} tokens/s each, ready in "
        f"{context.startup_s:.0f} s"
    )
    return Verdict(current + add, Reason.BATCH_DEADLINES_AT_RISK, message)


def _at_risk_why(tuning: PoolTuning, context: BatchContext) -> str:
    assessment = context.assessment
    required = assessment.required_throughput_tokens_per_s
    # Overdue groups need infinite throughput; size for the groups capacity can still save.
    need = required if math.isfinite(required) else assessment.open_required_throughput_tokens_per_s
    prior = (
        f", output lengths at least the prior's until {MEASURED_SAMPLES:.0f} complete"
        if context.lengths_from_prior
        else ""
    )
    return (
        f"batch backpressure {assessment.backpressure_ratio:.2f} > "
        f"{tuning.global_scaling.bbp_threshold_ratio:.2f} ({assessment.groups_at_risk} of "
        f"{assessment.groups} groups at risk, need {need:.0f} tokens/s, "
        f"have {context.throughput_tokens_per_s:.0f}{prior})"
    )


def instances_in_time(
    assessment: BatchAssessment, theta: float, per_instance: float, startup_s: float
) -> float:
    """Instances that, ready `startup_s` from now, bring every open group within its deadline.

    The throughput there is now (`theta`) works on a group for all of its time left; a new
    instance only for what remains once it is ready. Sized on the time left alone, a backlog
    due in 14 minutes on a pool whose pods take 12 to start got one batch instance for two
    minutes of work. A group due before anything started now is ready asks for nothing: more
    instances cannot save it (the caller still adds one while any group is at risk).
    """
    if per_instance <= 0:
        return math.inf
    worst = 0.0
    for tokens, left_s in assessment.open_demands:
        short = tokens - theta * left_s
        useful_s = left_s - startup_s
        if short > 0 and useful_s > 0:
            worst = max(worst, short / (per_instance * useful_s))
    return worst
