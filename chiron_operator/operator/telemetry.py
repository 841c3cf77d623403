"""The operator's own Prometheus metrics: what it decided, applied and saw, per pool.

The names are a public contract: the Helm chart's recording rules, alerts and Grafana
dashboards query them, and a chart test checks every name they use exists here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

POOL_LABELS = ("namespace", "pool")
ROLE_LABELS = (*POOL_LABELS, "role")


def _gauge(name: str, doc: str, labels: tuple[str, ...], registry: CollectorRegistry) -> Gauge:
    return Gauge(name, doc, labels, registry=registry)


@dataclass
class OperatorMetrics:
    """Every metric the operator exports, registered on one registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.decisions = Counter(
            "chiron_decisions",
            "Decisions by controller, role and reason (a hold counts too).",
            (*ROLE_LABELS, "controller", "reason"),
            registry=r,
        )
        self.actions = Counter(
            "chiron_actions",
            "Changes applied to Deployments, by kind (replicas, batch_size).",
            (*ROLE_LABELS, "kind"),
            registry=r,
        )
        self.desired_replicas = _gauge(
            "chiron_desired_replicas", "Replicas the policy wants per role.", ROLE_LABELS, r
        )
        self.applied_replicas = _gauge(
            "chiron_applied_replicas", "Replicas in the role's Deployment spec.", ROLE_LABELS, r
        )
        self.ready_replicas = _gauge(
            "chiron_ready_replicas", "Ready pods of the role's Deployment.", ROLE_LABELS, r
        )
        self.max_replicas = _gauge(
            "chiron_max_replicas", "The role's maxReplicas bound.", ROLE_LABELS, r
        )
        self.batch_size = _gauge(
            "chiron_batch_size_seqs",
            "Batch size (--max-num-seqs) per role; kind=target (local controller) or applied.",
            (*ROLE_LABELS, "kind"),
            r,
        )
        self.backpressure = _gauge(
            "chiron_backpressure_ratio",
            "Backpressure by kind: interactive (busy share) or batch (groups at risk share).",
            (*POOL_LABELS, "kind"),
            r,
        )
        self.slo_slack = _gauge(
            "chiron_slo_slack_ratio",
            "1 - observed/target at the SLO percentile, by slo (ttft, itl); negative = missed.",
            (*POOL_LABELS, "slo"),
            r,
        )
        self.batch_queued = _gauge(
            "chiron_batch_queued_requests", "Batch requests queued.", POOL_LABELS, r
        )
        self.batch_worst_slack = _gauge(
            "chiron_batch_worst_slack_seconds",
            "Least time left minus waiting-time bound over batch deadline groups.",
            POOL_LABELS,
            r,
        )
        self.metrics_age = _gauge(
            "chiron_metrics_age_seconds", "Age of the newest vLLM sample.", POOL_LABELS, r
        )
        self.metrics_available = _gauge(
            "chiron_metrics_available", "1 when the pool's signals are fresh.", POOL_LABELS, r
        )
        self.conflict = _gauge(
            "chiron_conflict", "1 while another autoscaler or actor conflicts.", POOL_LABELS, r
        )
        self.prometheus_queries = _gauge(
            "chiron_prometheus_queries_per_tick",
            "PromQL queries the last tick issued for the pool.",
            POOL_LABELS,
            r,
        )
        self.restarts = Counter(
            "chiron_restarts", "Pod restarts caused by batch-size changes.", ROLE_LABELS, registry=r
        )
        self.reconcile_seconds = Histogram(
            "chiron_reconcile_duration_seconds",
            "Wall time of one control tick (gather, decide, apply, report).",
            POOL_LABELS,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.mode = _gauge(
            "chiron_mode", "1 for the pool's current mode.", (*POOL_LABELS, "mode"), r
        )

    def forget_pool(self, namespace: str, pool: str) -> None:
        """Drop every series of a deleted pool, so dashboards do not show ghosts."""
        for family in self._families():
            names: tuple[str, ...] = family._labelnames
            seen: set[tuple[str, ...]] = set()
            for metric in family.collect():
                for sample in metric.samples:
                    if sample.labels.get("namespace") != namespace:
                        continue
                    if sample.labels.get("pool") != pool:
                        continue
                    seen.add(tuple(sample.labels[n] for n in names))
            for key in seen:
                family.remove(*key)

    def _families(self) -> list[Counter | Gauge | Histogram]:
        return [v for v in vars(self).values() if isinstance(v, Counter | Gauge | Histogram)]


METRIC_NAMES = (
    "chiron_decisions_total",
    "chiron_actions_total",
    "chiron_desired_replicas",
    "chiron_applied_replicas",
    "chiron_ready_replicas",
    "chiron_max_replicas",
    "chiron_batch_size_seqs",
    "chiron_backpressure_ratio",
    "chiron_slo_slack_ratio",
    "chiron_batch_queued_requests",
    "chiron_batch_worst_slack_seconds",
    "chiron_metrics_age_seconds",
    "chiron_metrics_available",
    "chiron_conflict",
    "chiron_prometheus_queries_per_tick",
    "chiron_restarts_total",
    "chiron_reconcile_duration_seconds",
    "chiron_mode",
)
