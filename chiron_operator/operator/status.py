"""What a tick tells users: the pool's status and its conditions. Pure.

Status answers "why did (or didn't) it scale?" in the order users look: the summary columns,
per-role counts and batch sizes, the signals the policy read, conditions, then the decisions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import TypeAdapter

from chiron_operator.api.spec import Mode
from chiron_operator.api.status import (
    Condition,
    ConditionStatus,
    ConditionType,
    DecisionRecord,
    GatewayStatus,
    MetricNames,
    PoolStatus,
    Recommendations,
    RoleRecommendation,
    RoleStatus,
    RoleStatuses,
    SignalsStatus,
    batch_size_summary,
    finite_or_none,
    replicas_summary,
    slack_ratio,
    slo_slack_ratio,
    upsert_condition,
)
from chiron_operator.control.batch_scaling import instance_tokens_per_s
from chiron_operator.control.guards import UNSCHEDULABLE_GRACE_S
from chiron_operator.core.decision import PoolDecision
from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import PoolSnapshot
from chiron_operator.core.state import ChironState
from chiron_operator.core.tuning import PoolTuning
from chiron_operator.metrics import RoleFacts
from chiron_operator.operator.facts import UnschedulableFacts
from chiron_operator.operator.plan import Change, Plan


@dataclass(frozen=True, slots=True)
class TickReport:
    """Everything a tick knows that status shows."""

    snapshot: PoolSnapshot
    decision: PoolDecision
    facts: Mapping[Role, RoleFacts]
    the_plan: Plan
    new_records: Sequence[DecisionRecord]
    state: ChironState
    tuning: PoolTuning
    mode: Mode
    metric_names: MetricNames | None
    generation: int
    history_limit: int
    now: datetime
    # How long ready pods may go unscraped before that is a metrics problem worth a Warning.
    first_scrape_grace_s: float = 60.0
    # The plan's changes that did not reach a Deployment (not Enforce, a conflict, a failure).
    unapplied: frozenset[Change] = frozenset()
    # Why the batch-queue query failed ("" when it answered or is not configured).
    queue_error: str = ""
    # The pool's gateway (None: spec.gateway disabled, or the pool's name is not known).
    gateway: GatewayStatus | None = None
    # The roles with pods no node fits (PodScheduled False, reason Unschedulable).
    unschedulable: Mapping[Role, UnschedulableFacts] = field(default_factory=dict)


# Built once: a TypeAdapter compiles its schema when constructed (milliseconds), and the state
# is written every tick of every pool (`core.state.to_wire` builds one per call).
STATE_WIRE: TypeAdapter[ChironState] = TypeAdapter(ChironState)

METRICS_FRESH = "MetricsFresh"
METRICS_STALE = "MetricsStale"
# Ready pods Prometheus has not scraped yet: every new pool passes through it, so it is
# reported (and held on) without a Warning until the grace period runs out.
METRICS_PENDING = "MetricsPending"
# The pods' signals are fine but the batch-queue query failed: only the batch role holds.
BATCH_QUEUE_UNAVAILABLE = "BatchQueueUnavailable"
PODS_SCHEDULED = "PodsScheduled"
# Pods wait for a node within the grace period (a cluster autoscaler may be adding one).
PODS_UNSCHEDULABLE = "PodsUnschedulable"
# The grace period ran out: the role is capped at its scheduled pods.
UNSCHEDULABLE_CAPPED = "UnschedulableCapped"


def build_status(report: TickReport, previous: PoolStatus) -> PoolStatus:
    """The pool's status after a tick, carrying conditions and history over from `previous`."""
    roles = _role_statuses(report)
    signals = signals_status(
        report.snapshot, report.decision, report.tuning, report.metric_names, report.state
    )
    history = (*previous.decisions, *report.new_records)[-report.history_limit :]
    conditions = _tick_conditions(report, previous.conditions)
    last_reason = history[-1].reason if history else previous.last_reason
    if report.the_plan.changes:
        last_reason = report.the_plan.changes[0].verdict.reason.value
    return PoolStatus(
        observed_generation=report.generation,
        replicas_summary=replicas_summary(roles),
        batch_size_summary=batch_size_summary(roles),
        slo_slack_ratio=slo_slack_ratio(signals),
        last_reason=last_reason,
        roles=roles,
        gateway=report.gateway,
        signals=signals,
        conditions=conditions,
        decisions=history,
        recommendations=_recommendations(report),
        controller_state=STATE_WIRE.dump_python(report.state, mode="json"),
    )


def _role_statuses(report: TickReport) -> RoleStatuses:
    statuses: dict[str, RoleStatus] = {}
    for role in Role:
        fact = report.facts.get(role)
        role_decision = report.decision.roles.get(role)
        statuses[role.value] = RoleStatus(
            desired_replicas=report.decision.replicas(role),
            current_replicas=fact.replicas if fact else 0,
            ready_replicas=fact.ready_replicas if fact else 0,
            batch_size_seqs=fact.max_num_seqs if fact else None,
            target_batch_size_seqs=role_decision.target_max_num_seqs if role_decision else None,
        )
    return RoleStatuses.model_validate(statuses)


def gateway_status(endpoint: str, replicas: tuple[int, int] | None) -> GatewayStatus:
    """The gateway's status: its endpoint, and (replicas, ready pods) of its Deployment (None
    while the Deployment does not exist yet: nothing serves)."""
    desired, ready = replicas or (0, 0)
    return GatewayStatus(endpoint=endpoint, replicas=desired, ready_replicas=ready)


def signals_status(
    snapshot: PoolSnapshot,
    decision: PoolDecision,
    tuning: PoolTuning,
    metric_names: MetricNames | None,
    state: ChironState,
) -> SignalsStatus:
    """Pool-wide signals; latencies are the worst fresh interactive-serving pod's percentile.

    The batch instance's throughput is published because the gateway warns from it (with the
    role's maxReplicas) when a batch's completion window cannot be met even at full size.
    """
    staleness_s = tuning.guards.metrics_staleness_s
    serving = [
        p
        for p in snapshot.all_pods()
        if p.role is not Role.BATCH and p.ready and p.sample_age_s <= staleness_s
    ]
    ttft_s = _max_known(p.ttft_s for p in serving)
    itl_s = _max_known(p.itl_s for p in serving)
    kv = [
        p.kv_cache_usage_ratio for p in snapshot.all_pods() if math.isfinite(p.kv_cache_usage_ratio)
    ]
    obs = decision.observations
    queued = snapshot.batch_queue.queued_requests if snapshot.batch_queue.groups else None
    return SignalsStatus(
        interactive_backpressure_ratio=finite_or_none(obs.get("interactive_backpressure_ratio")),
        batch_backpressure_ratio=finite_or_none(obs.get("batch_backpressure_ratio")),
        ttft_s=ttft_s,
        itl_s=itl_s,
        ttft_slack_ratio=slack_ratio(ttft_s, tuning.slo.interactive_ttft_s),
        itl_slack_ratio=slack_ratio(itl_s, tuning.slo.interactive_itl_s),
        kv_cache_usage_ratio=sum(kv) / len(kv) if kv else None,
        queued_batch_requests=queued,
        batch_instance_tokens_per_s=instance_tokens_per_s(tuning, state.global_scaling),
        metrics_age_s=finite_or_none(snapshot.metrics_age_s),
        metric_names=metric_names,
    )


def _max_known(values: Iterable[float]) -> float | None:
    known = [v for v in values if math.isfinite(v)]
    return max(known) if known else None


def _recommendations(report: TickReport) -> Recommendations:
    if report.mode is not Mode.RECOMMEND:
        return Recommendations()
    recommended = {
        role.value: RoleRecommendation(
            replicas=d.replicas.value, batch_size_seqs=d.max_num_seqs.value
        )
        for role, d in report.decision.roles.items()
    }
    return Recommendations.model_validate(recommended)


def condition(
    kind: ConditionType, status: bool, reason: str, message: str, *, now: datetime, generation: int
) -> Condition:
    """A condition of `kind`; `status` True/False."""
    return Condition(
        type=kind.value,
        status=ConditionStatus.TRUE if status else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        last_transition_time=now,
        observed_generation=generation,
    )


def _metrics_condition(report: TickReport, previous: Sequence[Condition]) -> Condition:
    now, gen = report.now, report.generation
    problem = report.snapshot.metrics_error or _stale_message(report)
    kind = ConditionType.METRICS_AVAILABLE
    if not problem and report.queue_error:
        message = (
            f"{report.queue_error}: the batch role holds, the other roles scale on (the pods' "
            "signals are fresh)"
        )
        return condition(kind, False, BATCH_QUEUE_UNAVAILABLE, message, now=now, generation=gen)
    if not problem:
        age = report.snapshot.metrics_age_s
        fresh = f"newest sample {age:.0f} s old" if math.isfinite(age) else "no ready pod yet"
        return condition(kind, True, METRICS_FRESH, fresh, now=now, generation=gen)
    if _awaiting_first_scrape(report, previous):
        waiting = (
            f"waiting for the first scrape of the ready pods (up to "
            f"{report.first_scrape_grace_s:.0f} s): holding"
        )
        return condition(kind, False, METRICS_PENDING, waiting, now=now, generation=gen)
    return condition(kind, False, METRICS_STALE, problem, now=now, generation=gen)


def _awaiting_first_scrape(report: TickReport, previous: Sequence[Condition]) -> bool:
    """No ready pod has a sample yet, and not for longer than the grace period."""
    snapshot = report.snapshot
    if snapshot.metrics_error or math.isfinite(snapshot.metrics_age_s):
        return False
    kind = ConditionType.METRICS_AVAILABLE.value
    before = next((c for c in previous if c.type == kind), None)
    if before is None or before.status is ConditionStatus.TRUE:
        return True
    waited_s = (report.now - before.last_transition_time).total_seconds()
    return before.reason == METRICS_PENDING and waited_s < report.first_scrape_grace_s


def _tick_conditions(report: TickReport, previous: Sequence[Condition]) -> tuple[Condition, ...]:
    now, gen = report.now, report.generation
    metrics = _metrics_condition(report, previous)
    problem = metrics.status is not ConditionStatus.TRUE
    stuck = sum(f.pods for f in report.unschedulable.values())
    starting = max(0, sum(f.starting_replicas for f in report.facts.values()) - stuck)
    acting = report.the_plan.acts
    scaling = condition(
        ConditionType.SCALING,
        acting or starting > 0,
        "Scaling"
        if acting
        else ("PodsStarting" if starting else (PODS_UNSCHEDULABLE if stuck else "Stable")),
        _scaling_message(report, starting),
        now=now,
        generation=gen,
    )
    ready = all(f.ready_replicas >= f.replicas for f in report.facts.values())
    ready_condition = condition(
        ConditionType.READY,
        ready and not problem,
        "PoolReady"
        if ready and not problem
        else (_unavailable(metrics) if problem else "PodsNotReady"),
        replicas_summary(_role_statuses(report)),
        now=now,
        generation=gen,
    )
    conditions = tuple(previous)
    for new in (metrics, scaling, ready_condition, schedulable_condition(report)):
        conditions = upsert_condition(conditions, new)
    return conditions


def schedulable_condition(report: TickReport) -> Condition:
    """Schedulable: False while a role has pods no node fits, or is capped for having had them.

    The reason tells whether the role still waits for a node (a cluster autoscaler may add
    one within the grace) or has been capped at its scheduled pods.
    """
    parts, capped = [], False
    for role, stuck in sorted(report.unschedulable.items()):
        waited_s = report.now.timestamp() - stuck.since_s
        over = waited_s >= UNSCHEDULABLE_GRACE_S
        capped = capped or over
        then = "capped at the scheduled pods" if over else f"grace {UNSCHEDULABLE_GRACE_S:g} s"
        parts.append(
            f"{role.value}: {stuck.pods} pod(s) unschedulable for {waited_s:.0f} s ({then}): "
            f"{stuck.message[:300]}"
        )
    for role, guard in sorted(report.state.guards.items()):
        retry_s = guard.unschedulable_retry_s
        if role not in report.unschedulable and retry_s is not None:
            capped = True
            wait_s = retry_s - report.now.timestamp()
            parts.append(
                f"{role.value}: capped after pods found no node, next try in {wait_s:.0f} s"
            )
    now, gen = report.now, report.generation
    if not parts:
        message = "every pod found a node"
        return condition(
            ConditionType.SCHEDULABLE, True, PODS_SCHEDULED, message, now=now, generation=gen
        )
    reason = UNSCHEDULABLE_CAPPED if capped else PODS_UNSCHEDULABLE
    return condition(
        ConditionType.SCHEDULABLE, False, reason, "; ".join(parts), now=now, generation=gen
    )


def _unavailable(metrics: Condition) -> str:
    return METRICS_PENDING if metrics.reason == METRICS_PENDING else "MetricsUnavailable"


def _stale_message(report: TickReport) -> str:
    age = report.snapshot.metrics_age_s
    limit = report.tuning.guards.metrics_staleness_s
    # Only ready pods are expected to be scraped: a pool whose pods are all starting (a vLLM
    # cold start takes minutes) has nothing to measure yet, which is not a metrics problem.
    has_ready = any(p.ready for p in report.snapshot.all_pods())
    if has_ready and not age <= limit:
        shown = "no sample" if math.isinf(age) else f"newest sample {age:.0f} s old"
        return f"{shown} (staleness limit {limit:.0f} s): holding, never scaling down on it"
    return ""


def _scaling_message(report: TickReport, starting: int) -> str:
    parts = [
        f"{c.role.value} {c.field.value} {c.from_value}->{c.to_value} ({c.verdict.reason.value})"
        for c in report.the_plan.changes
    ]
    if report.the_plan.blocked_by:
        parts.append(f"not applied: {report.the_plan.blocked_by}")
    elif report.the_plan.changes and not report.the_plan.enforce:
        parts.append(f"not applied: mode {report.mode.value}")
    if starting:
        parts.append(f"{starting} pod(s) starting")
    stuck = sum(f.pods for f in report.unschedulable.values())
    if stuck:
        parts.append(f"{stuck} pod(s) unschedulable (see Schedulable)")
    return "; ".join(parts) or "no change"
