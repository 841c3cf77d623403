"""Prometheus query results -> per-pod values, per-role output lengths and the batch queue.

Pure: the JSON `data.result` of each query in, frozen values out. The rules:

- Absent: a pod missing from a query's result has NaN for that signal (partial results are
  normal: a pod that just started may export gauges before its first latency observation).
- Non-finite: NaN and +-Inf from Prometheus (histogram_quantile over no traffic is NaN) are
  NaN. Zero is kept: it is an observation.
- No traffic vs no data: a latency histogram's count rate of 0 means no request was observed
  over the window: the quantile is NaN but the load is known to be zero
  (`*_observations_per_s == 0`, and the generation rate reads 0). Absent means no data.
- Age: a pod's sample age is the query's evaluation time minus its newest running-requests
  sample's timestamp, both on Prometheus's clock so clock skew with the operator cancels. A pod
  without that sample has age inf. (Staleness, age > the guard rails' limit, is applied when
  the snapshot is built; see `chiron_operator.metrics.snapshot`.)
- Mean ITL: the running query's `mean_itl` part (mean running over the token rate, over the
  newest scrape intervals); like any part, NaN when absent (fewer than two samples in range).
- Names: per pod and signal the v1 name wins when a pod exports both generations (vLLM kept
  deprecated names alongside new ones for a release); otherwise the legacy one is read. The
  pool reports v1 or legacy when every fresh pod was read with that generation, mixed when
  both contributed (a rolling upgrade, or a vLLM between the two renames), None when no pod
  exported either.
- Gateway batch signals (a pool with a gateway and no `spec.batchQueue`): the queue's age is the
  evaluation time minus the newest gateway sample's time, inf without one (the gateway is not
  scraped: the queue is unknown, never read as empty); the lengths' moments are exact (count,
  sum, sum of squares), see `gateway_lengths`.
- KV-cache usage is passed through as a 0-1 ratio: despite `_perc` in the name, vLLM exports a
  ratio ("1 means 100 percent usage"; the sample scrape shows 0.000488 = 8 of 16384 blocks).
- Errors: a result of the wrong shape raises `MalformedResultError`; the source turns it, like any
  failed query, into an error for the whole fetch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from chiron_operator.api.status import MetricNames
from chiron_operator.core.enums import Role
from chiron_operator.metrics.promql import (
    GATEWAY_DEADLINE_LABEL,
    GENERATIONS,
    PART_LABEL,
    ROLE_LABEL,
    Part,
    PoolQuery,
    Signal,
    part_tag,
)
from chiron_operator.metrics.results import (
    NAN,
    OutputLengths,
    PodMetrics,
    PoolMetrics,
    QueuedGroup,
    QueueMetrics,
)

_POD_SIGNALS = (
    Signal.RUNNING,
    Signal.WAITING,
    Signal.KV_CACHE,
    Signal.GENERATION_TOKENS,
    Signal.ITL,
    Signal.TTFT,
)


class MalformedResultError(ValueError):
    """A query result that is not an instant vector (or scalar) as the HTTP API defines it."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of an instant query: its labels, value and evaluation time (unix s)."""

    labels: Mapping[str, str]
    value: float
    time_s: float


def known(value: float) -> float:
    """`value` when finite, else NaN (Prometheus's NaN and +-Inf both mean unknown here)."""
    return value if math.isfinite(value) else NAN


def _point(raw: object) -> tuple[float, float]:
    if not (isinstance(raw, Sequence) and len(raw) == 2):
        raise MalformedResultError(f"expected [time, value], got {raw!r:.80}")
    try:
        return float(raw[0]), float(raw[1])
    except (TypeError, ValueError) as exc:
        raise MalformedResultError(f"unreadable sample {raw!r:.80}") from exc


def parse_vector(result: object) -> tuple[Sample, ...]:
    """The samples of an instant query's `data.result`; a scalar is one unlabelled sample."""
    if isinstance(result, Sequence) and len(result) == 2 and not isinstance(result[0], dict):
        time_s, value = _point(result)
        return (Sample(MappingProxyType({}), value, time_s),)
    if not isinstance(result, Sequence) or isinstance(result, str):
        raise MalformedResultError(f"expected a vector, got {type(result).__name__}")
    samples = []
    for item in result:
        if not isinstance(item, dict) or "value" not in item:
            raise MalformedResultError(f"expected an instant-vector sample, got {item!r:.80}")
        labels = item.get("metric", {})
        if not isinstance(labels, dict):
            raise MalformedResultError(f"labels must be an object, got {labels!r:.80}")
        time_s, value = _point(item["value"])
        frozen = MappingProxyType({str(k): str(v) for k, v in labels.items()})
        samples.append(Sample(frozen, value, time_s))
    return tuple(samples)


def by_pod(samples: Iterable[Sample], pod_label: str, tag: str | None = None) -> dict[str, float]:
    """Pod -> value of the samples carrying `tag` (all samples when None); no pod -> skipped."""
    found: dict[str, float] = {}
    for sample in samples:
        pod = sample.labels.get(pod_label)
        if pod and (tag is None or sample.labels.get(PART_LABEL) == tag):
            found[pod] = known(sample.value)
    return found


def sample_ages(samples: Iterable[Sample], pod_label: str) -> dict[str, float]:
    """Pod -> evaluation time minus newest sample time, from the running query's timestamps."""
    stamps = [s for s in samples if s.labels.get(PART_LABEL) == part_tag(Part.TIMESTAMP)]
    return {
        pod: max(0.0, s.time_s - s.value)
        for s in stamps
        if (pod := s.labels.get(pod_label)) and math.isfinite(s.value)
    }


def names_of(generations: Iterable[MetricNames]) -> MetricNames | None:
    """v1, legacy, or mixed when both (or a pod already mixed) contributed; None for none."""
    seen = set(generations)
    if MetricNames.MIXED in seen or {MetricNames.V1, MetricNames.LEGACY} <= seen:
        return MetricNames.MIXED
    return next(iter(seen), None)


@dataclass(frozen=True, slots=True)
class _Latency:
    quantile: dict[str, float]
    observations: dict[str, float]


def _latency(samples: Sequence[Sample], pod_label: str, generation: MetricNames | None) -> _Latency:
    return _Latency(
        by_pod(samples, pod_label, part_tag(Part.QUANTILE, generation)),
        by_pod(samples, pod_label, part_tag(Part.OBSERVATIONS, generation)),
    )


class _PodReader:
    """Reads every pod signal out of one fetch's results."""

    def __init__(self, results: Mapping[Signal, Sequence[Sample]], pod_label: str) -> None:
        running = results[Signal.RUNNING]
        self.running = by_pod(running, pod_label, part_tag(Part.VALUE))
        self.mean_itl = by_pod(running, pod_label, part_tag(Part.MEAN_ITL))
        self.interactive = by_pod(running, pod_label, part_tag(Part.GATEWAY_INTERACTIVE))
        self.gateway_cap = by_pod(running, pod_label, part_tag(Part.GATEWAY_CAP))
        self.ages = sample_ages(running, pod_label)
        self.waiting = by_pod(results[Signal.WAITING], pod_label)
        self.generation_rate = by_pod(results[Signal.GENERATION_TOKENS], pod_label)
        self.kv = {
            g: by_pod(results[Signal.KV_CACHE], pod_label, part_tag(Part.VALUE, g))
            for g in GENERATIONS
        }
        self.itl = {g: _latency(results[Signal.ITL], pod_label, g) for g in GENERATIONS}
        self.ttft = _latency(results[Signal.TTFT], pod_label, None)
        # Only the per-pod queries name pods; a batch-queue series may carry any labels.
        self.pods = sorted({p for s in _POD_SIGNALS for p in by_pod(results[s], pod_label)})

    def pod(self, name: str) -> PodMetrics:
        kv_generation = next((g for g in GENERATIONS if name in self.kv[g]), None)
        itl_generation = next((g for g in GENERATIONS if name in self.itl[g].observations), None)
        itl = self.itl[itl_generation] if itl_generation else _Latency({}, {})
        used = [g for g in (kv_generation, itl_generation) if g is not None]
        return PodMetrics(
            running_requests=self.running.get(name, NAN),
            waiting_requests=self.waiting.get(name, NAN),
            kv_cache_usage_ratio=self.kv[kv_generation].get(name, NAN) if kv_generation else NAN,
            generation_tokens_per_s=self.generation_rate.get(name, NAN),
            mean_itl_s=self.mean_itl.get(name, NAN),
            itl_s=itl.quantile.get(name, NAN),
            itl_observations_per_s=itl.observations.get(name, NAN),
            ttft_s=self.ttft.quantile.get(name, NAN),
            ttft_observations_per_s=self.ttft.observations.get(name, NAN),
            sample_age_s=self.ages.get(name, math.inf),
            names=names_of(used),
            interactive_running_requests=self.interactive.get(name, NAN),
            gateway_cap_seqs=self.gateway_cap.get(name, NAN),
        )


def pod_metrics(
    results: Mapping[Signal, Sequence[Sample]], pod_label: str
) -> dict[str, PodMetrics]:
    """Every pod seen in any pod-signal result -> its signals (absent ones NaN)."""
    reader = _PodReader(results, pod_label)
    return {name: reader.pod(name) for name in reader.pods}


def pool_names(pods: Mapping[str, PodMetrics]) -> MetricNames | None:
    """The pool's name generation, judged on pods with a current sample only.

    A terminated pod's rates linger for a window after its gauges went stale; counting it would
    report a finished rolling upgrade as mixed for that long.
    """
    fresh = (p.names for p in pods.values() if math.isfinite(p.sample_age_s))
    return names_of(n for n in fresh if n is not None)


def histogram_mean_std(cumulative: Mapping[float, float], total: float) -> tuple[float, float]:
    """Mean and standard deviation of a histogram's observations (`le` -> cumulative rate).

    The mean is exact: sum / count. The spread is estimated by the law of total variance over
    the buckets: each finite bucket (l, u] holds its count uniformly, contributing its midpoint
    and a within-bucket variance (u - l)^2 / 12; the open +Inf bucket holds what the exact sum
    leaves for it as a point mass at that mean (at least its lower bound), its own spread
    being unseen. The estimate is low when much mass sits in the open bucket (vLLM sizes the
    length buckets 1, 2, 5, 10, 20, 50, 100, ... up to max-model-len, so normally it is
    nearly empty). NaN, NaN without observations.
    """
    count = known(cumulative.get(math.inf, NAN))
    if not count > 0 or not math.isfinite(total):
        return NAN, NAN
    mean = total / count
    bounds = sorted(le for le in cumulative if math.isfinite(le))
    counts, mids, widths = [], [], []
    # Like histogram_quantile: the first bucket starts at 0 (at its bound if that is negative).
    lower = min(0.0, bounds[0]) if bounds else 0.0
    below = 0.0
    for upper in bounds:
        # Per-bucket rates are extrapolated one by one and may undershoot their neighbour.
        counts.append(max(0.0, cumulative[upper] - below))
        mids.append((lower + upper) / 2)
        widths.append(upper - lower)
        lower, below = upper, max(below, cumulative[upper])
    open_count = max(0.0, count - below)
    if open_count > 0:
        left = total - sum(c * m for c, m in zip(counts, mids, strict=True))
        counts.append(open_count)
        mids.append(max(lower, left / open_count))
        widths.append(0.0)
    weight = sum(counts)
    if weight <= 0:
        return mean, NAN
    center = sum(c * m for c, m in zip(counts, mids, strict=True)) / weight
    spread = sum(
        c * ((m - center) ** 2 + w * w / 12) for c, m, w in zip(counts, mids, widths, strict=True)
    )
    return mean, math.sqrt(spread / weight)


def _le(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def output_lengths(samples: Iterable[Sample], window_s: float) -> dict[Role, OutputLengths]:
    """Role -> output-length statistics from the per-role histogram query over `window_s`."""
    buckets: dict[Role, dict[float, float]] = defaultdict(dict)
    sums: dict[Role, float] = {}
    roles = {r.value: r for r in Role}
    for sample in samples:
        role = roles.get(sample.labels.get(ROLE_LABEL, ""))
        part = sample.labels.get(PART_LABEL)
        le = _le(sample.labels.get("le"))
        if role is None:
            continue
        if part == part_tag(Part.BUCKET) and le is not None:
            buckets[role][le] = sample.value
        elif part == part_tag(Part.SUM):
            sums[role] = sample.value
    found = {}
    for role, cumulative in buckets.items():
        mean, std = histogram_mean_std(cumulative, sums.get(role, NAN))
        per_s = known(cumulative.get(math.inf, NAN))
        found[role] = OutputLengths(per_s, mean, std, completed_requests=per_s * window_s)
    return found


def gateway_lengths(samples: Iterable[Sample], window_s: float) -> OutputLengths:
    """Output lengths of the gateway's completed batch requests over `window_s`, from the count,
    sum and sum of squares the gateway-batch query carries.

    Exact moments, no buckets: the mean is sum / n and the spread the sample standard deviation
    sqrt((squares - n * mean^2) / (n - 1)), the estimator the simulator uses. One request shows
    no spread: NaN, as for none. `increase` extrapolates the three alike, so the ratios are
    unaffected; rounding may leave a variance a hair below zero, which is 0.
    """
    parts = {s.labels.get(PART_LABEL): known(s.value) for s in samples}
    count = parts.get(part_tag(Part.OBSERVATIONS), NAN)
    total = parts.get(part_tag(Part.SUM), NAN)
    squares = parts.get(part_tag(Part.SQUARES), NAN)
    mean = total / count if count > 0 else NAN
    variance = (squares - count * mean * mean) / (count - 1) if count > 1 else NAN
    std = math.sqrt(max(variance, 0.0)) if math.isfinite(variance) else NAN
    return OutputLengths(count / window_s, mean, std, completed_requests=count)


def gateway_queue(samples: Iterable[Sample]) -> QueueMetrics:
    """The gateway's batch queue by deadline, aged by its newest sample (inf: none at all)."""
    queued, ages = [], []
    for sample in samples:
        part = sample.labels.get(PART_LABEL)
        if part == part_tag(Part.QUEUE):
            queued.append(sample)
        elif part == part_tag(Part.TIMESTAMP) and math.isfinite(sample.value):
            ages.append(max(0.0, sample.time_s - sample.value))
    groups = queue_groups(queued, GATEWAY_DEADLINE_LABEL)
    return QueueMetrics(groups, sample_age_s=min(ages, default=math.inf))


def _deadline(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def queue_groups(samples: Iterable[Sample], deadline_label: str) -> tuple[QueuedGroup, ...]:
    """Queued batch requests grouped by deadline label, soonest first, unlabelled last.

    Series with a non-finite or non-positive value are skipped (nothing known to be queued);
    fractional values round up, so an averaged count never hides a request. A missing or
    unreadable deadline is None: the snapshot gives those the pool's default deadline.
    """
    merged: dict[float | None, int] = defaultdict(int)
    for sample in samples:
        if math.isfinite(sample.value) and sample.value > 0:
            merged[_deadline(sample.labels.get(deadline_label))] += math.ceil(sample.value)
    order = sorted(merged, key=lambda d: (d is None, d or 0.0))
    return tuple(QueuedGroup(d, merged[d]) for d in order)


def assemble(
    results: Mapping[Signal, Sequence[Sample]],
    query: PoolQuery,
    *,
    queries: int,
    fetched_at_s: float,
    queue_error: str = "",
) -> PoolMetrics:
    """The fetch's results as one `PoolMetrics` (every pod-signal result must be present)."""
    pods = pod_metrics(results, query.selector.pod_label)
    window_s = query.length_window_s
    gateway = results.get(Signal.GATEWAY_BATCH, ())
    return PoolMetrics(
        pods=MappingProxyType(pods),
        output_lengths=MappingProxyType(
            output_lengths(results.get(Signal.OUTPUT_LENGTH, ()), window_s)
        ),
        metric_names=pool_names(pods),
        queue=_queue(results, query, queue_error),
        gateway_lengths=gateway_lengths(gateway, window_s) if query.gateway_batch else None,
        queries=queries,
        fetched_at_s=fetched_at_s,
    )


def _queue(
    results: Mapping[Signal, Sequence[Sample]], query: PoolQuery, queue_error: str
) -> QueueMetrics | None:
    if query.gateway_batch:
        return gateway_queue(results.get(Signal.GATEWAY_BATCH, ()))
    if query.queue_query is None:
        return QueueMetrics(error=queue_error) if queue_error else None
    samples = results.get(Signal.BATCH_QUEUE, ())
    groups = () if queue_error else queue_groups(samples, query.deadline_label)
    return QueueMetrics(groups, queue_error)
