"""The gateway's own metrics: per-class load per pod, the queues, outcomes and latency.

The names are a contract: the operator's PromQL (`chiron_operator.metrics.promql`), the chart's
dashboards and alerts read them. Every series carries the pool's name, so one Prometheus can
hold many pools' gateways.
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

IN_FLIGHT: Final = "chiron_gateway_in_flight_requests"
POD_CAP: Final = "chiron_gateway_pod_cap_seqs"
QUEUED_INTERACTIVE: Final = "chiron_gateway_queued_interactive_requests"
QUEUE_WAIT: Final = "chiron_gateway_queue_wait_seconds"
REQUESTS: Final = "chiron_gateway_requests"
PREEMPTIONS: Final = "chiron_gateway_batch_preemptions"
TTFT: Final = "chiron_gateway_time_to_first_token_seconds"
BATCH_QUEUED: Final = "chiron_gateway_batch_queued_requests"
BATCH_QUEUED_TOKENS: Final = "chiron_gateway_batch_queued_tokens"

# vLLM's TTFT buckets, so a gateway-side and an engine-side histogram compare bucket by bucket.
TTFT_BUCKETS_S: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
WAIT_BUCKETS_S: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

OUTCOMES: Final = (
    "routed",
    "overflowed_to_mixed",
    "queued",
    "refused",
    "retried",
    "requeued",
    "completed",
    "failed",
)
"""Outcomes a request is counted under, by class (one request may count under several)."""


class GatewayMetrics:
    """Every metric the gateway exports, on its own registry."""

    def __init__(self, pool: str, registry: CollectorRegistry | None = None) -> None:
        self.pool = pool
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.in_flight = Gauge(
            IN_FLIGHT,
            "Requests this gateway has in flight on a pod, by class.",
            ("pool", "pod", "role", "class"),
            registry=r,
        )
        self.pod_cap = Gauge(
            POD_CAP,
            "This gateway's share of the pod's cap: min(--max-num-seqs, the role's target).",
            ("pool", "pod", "role"),
            registry=r,
        )
        self.queued_interactive = Gauge(
            QUEUED_INTERACTIVE,
            "Interactive requests waiting at the pool level for a slot.",
            ("pool",),
            registry=r,
        )
        self.queue_wait = Histogram(
            QUEUE_WAIT,
            "How long interactive requests waited at the pool level before a pod took them.",
            ("pool",),
            buckets=WAIT_BUCKETS_S,
            registry=r,
        )
        self.requests = Counter(
            REQUESTS,
            "Requests by class and outcome (routed, overflowed_to_mixed, queued, refused, "
            "retried, requeued, completed, failed).",
            ("pool", "class", "outcome"),
            registry=r,
        )
        self.preemptions = Counter(
            PREEMPTIONS,
            "Batch requests cut off on a mixed pod to free a slot for an interactive one.",
            ("pool", "pod"),
            registry=r,
        )
        self.ttft = Histogram(
            TTFT,
            "Time to first token as the gateway's clients see it, by class.",
            ("pool", "class"),
            buckets=TTFT_BUCKETS_S,
            registry=r,
        )
        self.batch_queued = Gauge(
            BATCH_QUEUED,
            "Batch requests queued, per deadline group (Unix seconds, rounded down).",
            ("pool", "deadline"),
            registry=r,
        )
        self.batch_queued_tokens = Gauge(
            BATCH_QUEUED_TOKENS,
            "Output tokens the queued batch requests are estimated to need.",
            ("pool",),
            registry=r,
        )

    def count(self, request_class: str, outcome: str) -> None:
        self.requests.labels(self.pool, request_class, outcome).inc()

    def forget_pod(self, pod: str, role: str) -> None:
        """Drop a gone pod's series, so dashboards and the operator do not see a ghost."""
        with contextlib.suppress(KeyError):
            self.pod_cap.remove(self.pool, pod, role)
        for request_class in ("interactive", "batch"):
            with contextlib.suppress(KeyError):
                self.in_flight.remove(self.pool, pod, role, request_class)
