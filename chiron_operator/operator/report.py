"""What a tick tells users: the pool's status and its conditions. Pure.

Status answers "why did (or didn't) it scale?" in the order users look: the summary columns,
per-role counts and batch sizes, the signals the policy read, conditions, then the decisions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from chiron_operator.api.spec import Mode
from chiron_operator.api.status import (
    Condition,
    ConditionStatus,
    ConditionType,
    DecisionRecord,
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
from chiron_operator.core.decision import PoolDecision
from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import PoolSnapshot
from chiron_operator.core.state import ChironState, to_wire
from chiron_operator.core.tuning import PoolTuning
from chiron_operator.metrics import RoleFacts
from chiron_operator.operator.plan import Plan


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


def build_status(report: TickReport, previous: PoolStatus) -> PoolStatus:
    """The pool's status after a tick, carrying conditions and history over from `previous`."""
    roles = _role_statuses(report)
    signals = signals_status(report.snapshot, report.decision, report.tuning, report.metric_names)
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
        signals=signals,
        conditions=conditions,
        decisions=history,
        recommendations=_recommendations(report),
        controller_state=to_wire(report.state),
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


def signals_status(
    snapshot: PoolSnapshot,
    decision: PoolDecision,
    tuning: PoolTuning,
    metric_names: MetricNames | None,
) -> SignalsStatus:
    """Pool-wide signals; latencies are the worst fresh interactive-serving pod's percentile."""
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


def _tick_conditions(report: TickReport, previous: Sequence[Condition]) -> tuple[Condition, ...]:
    now, gen = report.now, report.generation
    problem = report.snapshot.metrics_error or _stale_message(report)
    metrics = condition(
        ConditionType.METRICS_AVAILABLE,
        not problem,
        "MetricsStale" if problem else "MetricsFresh",
        problem or f"newest sample {report.snapshot.metrics_age_s:.0f} s old",
        now=now,
        generation=gen,
    )
    starting = sum(f.starting_replicas for f in report.facts.values())
    acting = report.the_plan.acts
    scaling = condition(
        ConditionType.SCALING,
        acting or starting > 0,
        "Scaling" if acting else ("PodsStarting" if starting else "Stable"),
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
        else ("MetricsUnavailable" if problem else "PodsNotReady"),
        replicas_summary(_role_statuses(report)),
        now=now,
        generation=gen,
    )
    conditions = tuple(previous)
    for new in (metrics, scaling, ready_condition):
        conditions = upsert_condition(conditions, new)
    return conditions


def _stale_message(report: TickReport) -> str:
    age = report.snapshot.metrics_age_s
    limit = report.tuning.guards.metrics_staleness_s
    has_pods = bool(report.snapshot.all_pods())
    if has_pods and not age <= limit:
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
    return "; ".join(parts) or "no change"
