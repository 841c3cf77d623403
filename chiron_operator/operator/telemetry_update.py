"""Publish one tick into the operator's own metrics."""

from __future__ import annotations

import math

from prometheus_client import Gauge

from chiron_operator.api import Mode
from chiron_operator.api.status import DecisionController
from chiron_operator.core.enums import Role
from chiron_operator.operator.context import PoolRef
from chiron_operator.operator.status import TickReport, signals_status
from chiron_operator.operator.telemetry import OperatorMetrics


def _set(gauge_child: Gauge, value: float | None) -> None:
    """Unknown values are NaN on /metrics, never a misleading 0."""
    gauge_child.set(math.nan if value is None else value)


def publish(
    metrics: OperatorMetrics, ref: PoolRef, report: TickReport, queries: int, seconds: float
) -> None:
    """Every gauge and counter of one tick."""
    pool = (ref.namespace, ref.name)
    for role, decision in report.decision.roles.items():
        labels = (*pool, role.value)
        fact = report.facts.get(role)
        metrics.desired_replicas.labels(*labels).set(decision.replicas.value)
        metrics.applied_replicas.labels(*labels).set(fact.replicas if fact else 0)
        metrics.ready_replicas.labels(*labels).set(fact.ready_replicas if fact else 0)
        metrics.max_replicas.labels(*labels).set(report.tuning.role_bounds(role).max_replicas)
        metrics.batch_size.labels(*labels, "target").set(decision.target_max_num_seqs)
        metrics.batch_size.labels(*labels, "applied").set(fact.max_num_seqs if fact else 0)
        metrics.decisions.labels(
            *labels, DecisionController.GLOBAL.value, decision.replicas.reason.value
        ).inc()
        metrics.decisions.labels(
            *labels, DecisionController.RESTART.value, decision.max_num_seqs.reason.value
        ).inc()
    if report.the_plan.acts:
        for change in report.the_plan.changes:
            labels = (*pool, change.role.value)
            metrics.actions.labels(*labels, change.field.value).inc()
            if change.field.value == "batchSize":
                metrics.restarts.labels(*labels).inc(_restarted_pods(report, change.role))
    _publish_signals(metrics, pool, report)
    metrics.prometheus_queries.labels(*pool).set(queries)
    metrics.reconcile_seconds.labels(*pool).observe(seconds)
    for mode in Mode:
        metrics.mode.labels(*pool, mode.value).set(1.0 if mode is report.mode else 0.0)


def _restarted_pods(report: TickReport, role: Role) -> int:
    fact = report.facts.get(role)
    return fact.replicas if fact else 0


def _publish_signals(metrics: OperatorMetrics, pool: tuple[str, str], report: TickReport) -> None:
    obs = report.decision.observations
    snapshot = report.snapshot
    _set(
        metrics.backpressure.labels(*pool, "interactive"), obs.get("interactive_backpressure_ratio")
    )
    _set(metrics.backpressure.labels(*pool, "batch"), obs.get("batch_backpressure_ratio"))
    _set(metrics.batch_worst_slack.labels(*pool), _finite(obs.get("batch_worst_slack_s")))
    metrics.batch_queued.labels(*pool).set(snapshot.batch_queue.queued_requests)
    age = snapshot.metrics_age_s
    _set(metrics.metrics_age.labels(*pool), age if math.isfinite(age) else None)
    fresh = not snapshot.metrics_error and age <= report.tuning.guards.metrics_staleness_s
    metrics.metrics_available.labels(*pool).set(1.0 if fresh else 0.0)
    signals = signals_status(
        snapshot, report.decision, report.tuning, report.metric_names, report.state
    )
    _set(metrics.slo_slack.labels(*pool, "ttft"), signals.ttft_slack_ratio)
    _set(metrics.slo_slack.labels(*pool, "itl"), signals.itl_slack_ratio)
    conflict = not report.the_plan.enforce and bool(report.the_plan.blocked_by)
    metrics.conflict.labels(*pool).set(1.0 if conflict else 0.0)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
