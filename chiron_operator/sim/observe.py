"""What the controller can know: PoolSnapshots built the way the operator's Prometheus adapter
builds them.

Every `scrape_interval_s` each running pod's counters, histograms and gauges are sampled; a
sample becomes visible `scrape_delay_s` later. At a control tick the snapshot takes, per ready
pod, the newest visible sample for gauges and, against the newest visible sample at least
`window_s` older (else the oldest kept), windowed rates and histogram quantiles (PromQL's
`rate` and `histogram_quantile` over `increase`) and the running gauge's mean over the same
samples (`avg_over_time`). Starting pods have no signals. With the pool's gateway, each pod's
sample also carries what the operator reads from the gateway (`chiron_gateway_*`): its
interactive requests in flight, which stand in for the class split vLLM does not export, and
its cap, the batch size the controllers judge the pod's fullness against (the fast path:
min(--max-num-seqs, the role's target)). Pod and replica counts come from the cluster as the
Kubernetes API would give them: current, not delayed. The batch queue (the gateway's
pool-level queue, empty without a gateway; batch work already on pods is in their gauges) is
sampled with the pods and grouped by deadline buckets; its output length mean and spread are
learned online from completed batch requests only, as the pool's gateway exports them,
together with how many requests they were learned from (the waiting-time bound widens by the
mean's standard error).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import (
    NAN,
    BatchGroup,
    BatchQueue,
    PodSignals,
    PoolSnapshot,
    RoleSnapshot,
    itl_window_s,
)
from chiron_operator.sim.cluster import Cluster
from chiron_operator.sim.instance import Instance, InstanceState
from chiron_operator.sim.podmetrics import (
    ITL_BUCKETS_S,
    TTFT_BUCKETS_S,
    OutputLengthStats,
    histogram_quantile,
)


@dataclass(frozen=True, slots=True)
class PodSample:
    """One scrape of one pod."""

    time_s: float
    generation_tokens: int
    ttft_buckets: tuple[int, ...]
    itl_buckets: tuple[int, ...]
    running: int
    waiting: int
    interactive_running: int
    interactive_waiting: int
    kv_usage_ratio: float
    gateway_interactive: float
    gateway_cap: float


@dataclass(frozen=True, slots=True)
class QueueSample:
    """One scrape of the pool-level batch queue and the learned output-length statistics."""

    time_s: float
    groups: tuple[BatchGroup, ...]
    output_tokens_mean: float
    output_tokens_std: float
    output_tokens_samples: float


GatewaySignals = Callable[[Instance], tuple[float, float]]
"""A pod's (interactive requests in flight, cap) at the gateway; NaN without one."""


def _no_gateway(_pod: Instance) -> tuple[float, float]:
    return NAN, NAN


def _delta(new: tuple[int, ...], old: tuple[int, ...]) -> list[int]:
    return [a - b for a, b in zip(new, old, strict=True)]


class Observer:
    """Scrapes pods into per-pod sample histories and builds snapshots from what is visible."""

    def __init__(
        self,
        *,
        scrape_interval_s: float,
        scrape_delay_s: float,
        window_s: float,
        quantile: float,
        expose_class_split: bool,
    ) -> None:
        self._delay_s = scrape_delay_s
        self._window_s = window_s
        self._itl_window_s = itl_window_s(scrape_interval_s, window_s)
        self._quantile = quantile
        self._split = expose_class_split
        self._retention_s = window_s + scrape_delay_s + 2.0 * scrape_interval_s
        self._pods: dict[str, deque[PodSample]] = {}
        self._queue: deque[QueueSample] = deque()

    def scrape(
        self,
        now: float,
        pods: Iterable[Instance],
        batch_groups: Mapping[float, int],
        lengths: OutputLengthStats,
        gateway: GatewaySignals = _no_gateway,
    ) -> None:
        """Sample every serving pod (ready or draining) and the batch queue at `now`."""
        kept: dict[str, deque[PodSample]] = {}
        for pod in pods:
            if pod.state is not InstanceState.READY and pod.state is not InstanceState.DRAINING:
                continue
            history = self._pods.get(pod.name) or deque()
            history.append(self._sample(pod, now, gateway(pod)))
            self._trim(history, now)
            kept[pod.name] = history
        self._pods = kept
        groups = tuple(BatchGroup(d, n) for d, n in sorted(batch_groups.items()))
        # No completion yet: the mean is NaN anyway, and inf is the snapshot's "uncounted".
        samples = float(lengths.count) if lengths.count > 0 else math.inf
        self._queue.append(
            QueueSample(now, groups, lengths.mean_or_nan(), lengths.std_or_nan(), samples)
        )
        self._trim(self._queue, now)

    def _trim(self, history: deque[PodSample] | deque[QueueSample], now: float) -> None:
        # Keep the newest sample at or before the retention edge: it is a window's base.
        edge = now - self._retention_s
        while len(history) > 2 and history[1].time_s <= edge:
            history.popleft()

    @staticmethod
    def _sample(pod: Instance, now: float, gateway: tuple[float, float]) -> PodSample:
        counters = pod.counters
        interactive_running, interactive_waiting = pod.interactive_counts()
        return PodSample(
            now,
            counters.generation_tokens,
            tuple(counters.ttft_buckets),
            tuple(counters.itl_buckets),
            pod.n_running,
            pod.n_waiting,
            interactive_running,
            interactive_waiting,
            pod.kv_usage_ratio(),
            *gateway,
        )

    def snapshot(self, now: float, cluster: Cluster) -> PoolSnapshot:
        """The PoolSnapshot a controller ticking at `now` would get."""
        roles = {role: self._role(role, cluster, now) for role in Role}
        ages = [p.sample_age_s for r in roles.values() for p in r.pods if p.ready]
        queue = self._batch_queue(now)
        newest = min([*ages, queue.sample_age_s], default=math.inf)
        return PoolSnapshot(now, roles, queue, newest)

    def _role(self, role: Role, cluster: Cluster, now: float) -> RoleSnapshot:
        members = cluster.members[role]
        pods = [self._pod(pod, now) for pod in members]
        pods.extend(
            PodSignals(p.name, role, False, p.max_num_seqs) for p in cluster.surge_pods(role)
        )
        ready = sum(1 for p in members if p.state is InstanceState.READY)
        return RoleSnapshot(
            role,
            replicas=len(members),
            ready_replicas=ready,
            starting_replicas=len(members) - ready,
            max_num_seqs=cluster.max_num_seqs[role],
            pods=tuple(pods),
        )

    def _visible(self, history: Iterable[PodSample], now: float) -> tuple[PodSample, ...]:
        edge = now - self._delay_s
        return tuple(s for s in history if s.time_s <= edge)

    def _pod(self, pod: Instance, now: float) -> PodSignals:
        ready = pod.state is InstanceState.READY
        visible = self._visible(self._pods.get(pod.name, ()), now) if ready else ()
        if not visible:
            return PodSignals(pod.name, pod.role, ready, pod.max_num_seqs)
        latest = visible[-1]
        window = self._window(visible)
        rate = ttft = itl = NAN
        if len(window) > 1:
            base = window[0]
            rate = (latest.generation_tokens - base.generation_tokens) / (
                latest.time_s - base.time_s
            )
            q = self._quantile
            ttft = histogram_quantile(
                q, TTFT_BUCKETS_S, _delta(latest.ttft_buckets, base.ttft_buckets)
            )
            itl = histogram_quantile(q, ITL_BUCKETS_S, _delta(latest.itl_buckets, base.itl_buckets))
        split = self._split
        interactive_running = float(latest.interactive_running) if split else NAN
        if latest.gateway_interactive == latest.gateway_interactive:  # not NaN: a gateway's
            interactive_running = latest.gateway_interactive
        cap = pod.max_num_seqs
        if latest.gateway_cap >= 1:  # as the operator's adapter reads the gateway's cap
            cap = min(cap, int(latest.gateway_cap))
        return PodSignals(
            pod.name,
            pod.role,
            ready,
            cap,
            running_requests=float(latest.running),
            waiting_requests=float(latest.waiting),
            interactive_running_requests=interactive_running,
            interactive_waiting_requests=float(latest.interactive_waiting) if split else NAN,
            kv_cache_usage_ratio=latest.kv_usage_ratio,
            generation_tokens_per_s=rate,
            mean_itl_s=self._mean_itl(visible),
            itl_s=itl,
            ttft_s=ttft,
            sample_age_s=now - latest.time_s,
        )

    def _mean_itl(self, visible: tuple[PodSample, ...]) -> float:
        """Mean running over the token rate, both over the samples of the left-open range
        (newest - `itl_window_s`, newest], as PromQL's avg_over_time and rate read them."""
        edge = visible[-1].time_s - self._itl_window_s
        start = len(visible) - 1
        while start > 0 and visible[start - 1].time_s > edge:
            start -= 1
        recent = visible[start:]
        if len(recent) < 2:
            return NAN
        first, last = recent[0], recent[-1]
        rate = (last.generation_tokens - first.generation_tokens) / (last.time_s - first.time_s)
        if rate <= 0.0:
            return NAN
        return sum(s.running for s in recent) / len(recent) / rate

    def _window(self, visible: tuple[PodSample, ...]) -> tuple[PodSample, ...]:
        """The visible samples from the window's base (the newest at least `window_s` older
        than the newest sample, else the oldest kept) through the newest."""
        edge = visible[-1].time_s - self._window_s
        start = next((i for i in range(len(visible) - 2, -1, -1) if visible[i].time_s <= edge), 0)
        return visible[start:]

    def _batch_queue(self, now: float) -> BatchQueue:
        edge = now - self._delay_s
        visible = [s for s in self._queue if s.time_s <= edge]
        if not visible:
            return BatchQueue()
        latest = visible[-1]
        return BatchQueue(
            latest.groups,
            latest.output_tokens_mean,
            latest.output_tokens_std,
            sample_age_s=now - latest.time_s,
            output_tokens_samples=latest.output_tokens_samples,
        )
