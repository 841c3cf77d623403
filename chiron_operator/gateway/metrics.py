"""The gateway's own metrics: per-class load per pod, the queues, outcomes and latency.

The names are a contract: the operator's PromQL (`chiron_operator.metrics.promql`), the chart's
dashboards and alerts read them. The pod a series is about is `target_pod` (and its role
`target_role`): `pod`, `namespace`, `pool` and `role` are the scrape's own labels, which
Prometheus adds from the gateway pod itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from chiron_operator.routing import PoolRouter

IN_FLIGHT: Final = "chiron_gateway_in_flight_requests"
POD_CAP: Final = "chiron_gateway_pod_cap_seqs"
BATCH_PREFILLING: Final = "chiron_gateway_batch_prefilling_requests"
QUEUED_INTERACTIVE: Final = "chiron_gateway_queued_interactive_requests"
QUEUE_WAIT: Final = "chiron_gateway_queue_wait_seconds"
REQUESTS: Final = "chiron_gateway_requests"
PREEMPTIONS: Final = "chiron_gateway_batch_preemptions"
TTFT: Final = "chiron_gateway_time_to_first_token_seconds"
BATCH_QUEUED: Final = "chiron_gateway_batch_queued_requests"
BATCH_QUEUED_TOKENS: Final = "chiron_gateway_batch_queued_tokens"
BATCH_OUTPUT_TOKENS: Final = "chiron_gateway_batch_output_tokens"
BATCH_OUTPUT_SQUARES: Final = "chiron_gateway_batch_output_tokens_squares"

# vLLM's TTFT buckets, so a gateway-side and an engine-side histogram compare bucket by bucket.
TTFT_BUCKETS_S: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
# vLLM's request_generation_tokens buckets (1-2-5 steps), so the two compare bucket by bucket.
OUTPUT_TOKEN_BUCKETS: Final = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000,
)  # fmt: skip
WAIT_BUCKETS_S: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class RouterGauges(Collector):
    """The router's state as gauges, read when Prometheus scrapes: in flight per pod and class,
    each pod's cap, its batch requests before their first token (what `batchPrefillsPerPod`
    paces), the interactive queue, the batch queue per deadline group.

    Read at scrape time rather than set on every routing action: a busy gateway routes
    thousands of times a second and is scraped every few seconds, and a pod that is gone simply
    stops appearing (no stale series to remove).
    """

    def __init__(self, router: Callable[[], PoolRouter]) -> None:
        self._router = router

    def collect(self) -> Iterator[GaugeMetricFamily]:
        router = self._router()
        in_flight = GaugeMetricFamily(
            IN_FLIGHT,
            "Requests this gateway has in flight on a pod, by class.",
            labels=("target_pod", "target_role", "class"),
        )
        cap = GaugeMetricFamily(
            POD_CAP,
            "This gateway's share of the pod's cap: min(--max-num-seqs, the role's target).",
            labels=("target_pod", "target_role"),
        )
        prefilling = GaugeMetricFamily(
            BATCH_PREFILLING,
            "Batch requests on the pod whose first token has not come back yet.",
            labels=("target_pod", "target_role"),
        )
        for pod in router.pods.values():
            role = pod.role.value
            in_flight.add_metric((pod.name, role, "interactive"), len(pod.interactive))
            in_flight.add_metric((pod.name, role, "batch"), len(pod.batch))
            cap.add_metric((pod.name, role), pod.cap_seqs)
            prefilling.add_metric((pod.name, role), pod.batch_prefilling)
        yield in_flight
        yield cap
        yield prefilling
        yield GaugeMetricFamily(
            QUEUED_INTERACTIVE,
            "Interactive requests waiting at the pool level for a slot.",
            value=len(router.waiting),
        )
        batch = GaugeMetricFamily(
            BATCH_QUEUED,
            "Batch requests queued, per deadline group (Unix seconds, rounded down to "
            "--deadline-bucket, 10 s by default).",
            labels=("deadline",),
        )
        for deadline_s, count in sorted(router.batch.queued_by_deadline().items()):
            label = str(int(deadline_s)) if math.isfinite(deadline_s) else "+Inf"
            batch.add_metric((label,), count)
        yield batch
        yield GaugeMetricFamily(
            BATCH_QUEUED_TOKENS,
            "Output tokens the queued batch requests are estimated to need.",
            value=router.batch.queued_tokens,
        )


class GatewayMetrics:
    """Every metric the gateway exports, on its own registry; `watch` adds the router's gauges."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queue_wait = Histogram(
            QUEUE_WAIT,
            "How long interactive requests waited at the pool level before a pod took them.",
            buckets=WAIT_BUCKETS_S,
            registry=r,
        )
        self.requests = Counter(
            REQUESTS,
            "Requests by class and outcome (routed, overflowed_to_mixed, queued, refused, "
            "retried, requeued, completed, failed).",
            ("class", "outcome"),
            registry=r,
        )
        self.preemptions = Counter(
            PREEMPTIONS,
            "Batch requests cut off on a mixed pod to free a slot for an interactive one.",
            ("target_pod",),
            registry=r,
        )
        self.ttft = Histogram(
            TTFT,
            "Time to first token as the gateway's clients see it, by class.",
            ("class",),
            buckets=TTFT_BUCKETS_S,
            registry=r,
        )

        self.batch_output_tokens = Histogram(
            BATCH_OUTPUT_TOKENS,
            "Output tokens of each completed batch request (Batch API or batch class): the "
            "lengths the batch controller's waiting-time bound learns its mean from.",
            buckets=OUTPUT_TOKEN_BUCKETS,
            registry=r,
        )
        self.batch_output_squares = Counter(
            BATCH_OUTPUT_SQUARES,
            "Sum of the squared output tokens of the same requests, so that the spread of "
            "their lengths is exact (variance = E[x^2] - E[x]^2) rather than read off buckets.",
            registry=r,
        )

    def observe_batch_output(self, tokens: int) -> None:
        """One completed batch request's output length."""
        self.batch_output_tokens.observe(tokens)
        self.batch_output_squares.inc(tokens * tokens)

    def watch(self, router: Callable[[], PoolRouter]) -> None:
        """Export the router's state (read at every scrape)."""
        self.registry.register(RouterGauges(router))

    def count(self, request_class: str, outcome: str) -> None:
        self.requests.labels(request_class, outcome).inc()
