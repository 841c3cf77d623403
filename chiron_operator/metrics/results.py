"""What one fetch from Prometheus returns: per-pod values, per-role lengths, the batch queue.

Unknown is NaN (or `math.inf` for an age), never zero, exactly as in the core snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from chiron_operator.api.status import MetricNames
from chiron_operator.core.enums import Role

NAN = math.nan


@dataclass(frozen=True, slots=True)
class PodMetrics:
    """One pod's signals as Prometheus reported them at the fetch.

    `*_observations_per_s` is the rate of the latency histogram's count: 0 with a NaN latency
    means no traffic (the load is known to be zero), NaN means no data. `sample_age_s` is the
    age of the pod's newest `vllm:num_requests_running` sample when the query ran, on
    Prometheus's clock (inf when absent). `names` is the metric generation read for this pod.
    `mean_itl_s` is the running gauge's mean over the token rate, over the newest scrape intervals.
    With the pool's gateway, `interactive_running_requests` is the pod's interactive requests in
    flight and `gateway_cap_seqs` its cap (both summed over the gateway's replicas); NaN without.
    """

    running_requests: float = NAN
    waiting_requests: float = NAN
    kv_cache_usage_ratio: float = NAN
    generation_tokens_per_s: float = NAN
    mean_itl_s: float = NAN
    itl_s: float = NAN
    itl_observations_per_s: float = NAN
    ttft_s: float = NAN
    ttft_observations_per_s: float = NAN
    sample_age_s: float = math.inf
    names: MetricNames | None = None
    interactive_running_requests: float = NAN
    gateway_cap_seqs: float = NAN


@dataclass(frozen=True, slots=True)
class OutputLengths:
    """Output length (tokens) of requests completed over the length window: one role's pods
    (vLLM's histogram), or the batch requests the pool's gateway completed.

    From vLLM's histogram, `mean` is exact (rate of the sum over rate of the count) and `std` is
    estimated from the buckets (see `chiron_operator.metrics.parse.histogram_mean_std`); from
    the gateway both are exact (its sum of squares). `completed_requests` is how many requests
    they were estimated from (the window's increase of the count; NaN when unknown).
    """

    requests_per_s: float = NAN
    mean: float = NAN
    std: float = NAN
    completed_requests: float = NAN


@dataclass(frozen=True, slots=True)
class QueuedGroup:
    """Queued batch requests sharing a deadline (unix seconds; None: the series had none)."""

    deadline_s: float | None
    queued_requests: int


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    """The batch queue as the user's query or the pool's gateway reported it.

    `error` is set when the user's query failed. `sample_age_s` is the age of the queue's
    newest sample when the query ran, on Prometheus's clock: 0 for a user's query (the adapter
    cannot see the samples behind an arbitrary query, so its evaluation time stands in), inf
    when the gateway exported nothing (not scraped, or not running: unknown, not empty).
    """

    groups: tuple[QueuedGroup, ...] = ()
    error: str = ""
    sample_age_s: float = 0.0


def _frozen_pods() -> Mapping[str, PodMetrics]:
    return MappingProxyType({})


def _frozen_lengths() -> Mapping[Role, OutputLengths]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PoolMetrics:
    """One fetch for one pool.

    `error` is set when any pod-signal query failed: then every signal is unknown, never a
    partial picture. `queue` is None when the pool has no batch queue (neither a gateway nor a
    user's query); a failed user queue query sets only `queue.error` (the pods' signals stay
    usable). `gateway_lengths` are the output lengths of the gateway's completed batch
    requests, None when they come from the pods' histograms (`output_lengths`). `queries`
    counts the queries issued, `fetched_at_s` is the operator's unix time when the fetch started.
    """

    pods: Mapping[str, PodMetrics] = field(default_factory=_frozen_pods)
    output_lengths: Mapping[Role, OutputLengths] = field(default_factory=_frozen_lengths)
    metric_names: MetricNames | None = None
    queue: QueueMetrics | None = None
    gateway_lengths: OutputLengths | None = None
    error: str = ""
    queries: int = 0
    fetched_at_s: float = NAN
