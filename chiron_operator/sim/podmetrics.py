"""The counters and histograms one vLLM pod exports, as the simulator accumulates them.

Bucket boundaries are vLLM's own (`vllm:time_to_first_token_seconds`,
`vllm:inter_token_latency_seconds`), so quantiles computed from them carry the same
interpolation error the operator sees through Prometheus.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chiron_operator.sim.live import LiveRequest

TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_ITL_INF_SLOT = len(ITL_BUCKETS_S)


class PodCounters:
    """Monotonic counters of one pod. Histograms hold per-bucket (not cumulative) counts, the
    last slot being +Inf; `histogram_quantile` cumulates them."""

    __slots__ = ("generation_tokens", "itl_buckets", "preemptions", "prompt_tokens", "ttft_buckets")

    def __init__(self) -> None:
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.preemptions = 0
        self.ttft_buckets = [0] * (len(TTFT_BUCKETS_S) + 1)
        self.itl_buckets = [0] * (len(ITL_BUCKETS_S) + 1)

    def observe_ttft(self, value_s: float) -> None:
        self.ttft_buckets[bisect_left(TTFT_BUCKETS_S, value_s)] += 1

    def observe_itl(self, value_s: float, count: int) -> None:
        self.itl_buckets[bisect_left(ITL_BUCKETS_S, value_s)] += count

    def observe_itl_run(self, first_s: float, step_s: float, iterations: int, seqs: int) -> None:
        """`iterations` decode steps lasting first_s, first_s + step_s, ..., each giving one
        token gap to each of `seqs` sequences; bucketed in O(buckets spanned), not O(steps)."""
        buckets = self.itl_buckets
        last_s = first_s + step_s * (iterations - 1)
        low = bisect_left(ITL_BUCKETS_S, first_s)
        # Usually every step falls in the first step's bucket: then one search suffices.
        if low == _ITL_INF_SLOT or last_s <= ITL_BUCKETS_S[low]:
            buckets[low] += iterations * seqs
            return
        high = bisect_left(ITL_BUCKETS_S, last_s)
        counted = 0
        for index in range(low, high):
            # Steps i with first_s + i*step_s <= bound; step_s > 0 since the ends differ.
            upto = math.floor((ITL_BUCKETS_S[index] - first_s) / step_s) + 1
            upto = min(iterations, max(counted, upto))
            buckets[index] += (upto - counted) * seqs
            counted = upto
        buckets[high] += (iterations - counted) * seqs


class OutputLengthStats:
    """Running mean and standard deviation of the output lengths of completed batch requests
    (Welford's algorithm).

    `completed` takes completed requests of any class as they finish (one list extend per
    boundary, no call); the batch ones among them are folded in, in completion order and so
    with the same arithmetic, whenever a statistic is read.
    """

    __slots__ = ("_count", "_m2", "_mean", "completed")

    def __init__(self) -> None:
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self.completed: list[LiveRequest] = []

    @property
    def count(self) -> int:
        self._settle()
        return self._count

    @property
    def mean(self) -> float:
        self._settle()
        return self._mean

    def add(self, tokens: int) -> None:
        self._settle()
        self._count += 1
        delta = tokens - self._mean
        self._mean += delta / self._count
        self._m2 += delta * (tokens - self._mean)

    def _settle(self) -> None:
        """`add` the output length of each batch request in `completed`, in order."""
        completed = self.completed
        if not completed:
            return
        count, mean, m2 = self._count, self._mean, self._m2
        for request in completed:
            if request.is_interactive:
                continue
            tokens = request.output_tokens
            count += 1
            delta = tokens - mean
            mean += delta / count
            m2 += delta * (tokens - mean)
        self._count, self._mean, self._m2 = count, mean, m2
        completed.clear()  # cleared, never rebound: the cluster holds the list

    def mean_or_nan(self) -> float:
        self._settle()
        return self._mean if self._count else math.nan

    def std_or_nan(self) -> float:
        self._settle()
        return math.sqrt(self._m2 / (self._count - 1)) if self._count > 1 else math.nan


def histogram_quantile(
    quantile: float, bounds: tuple[float, ...], counts: tuple[int, ...] | list[int]
) -> float:
    """PromQL's histogram_quantile over per-bucket counts (last slot +Inf); NaN if empty.

    Linear interpolation inside the bucket holding the rank; the first bucket's lower bound is
    0; a rank in the +Inf bucket returns the largest finite bound, as Prometheus does.
    """
    total = sum(counts)
    if total <= 0:
        return math.nan
    rank = quantile * total
    cumulative = 0.0
    for index, count in enumerate(counts):
        if cumulative + count >= rank and count > 0:
            if index == len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index > 0 else 0.0
            return lower + (bounds[index] - lower) * (rank - cumulative) / count
        cumulative += count
    return bounds[-1]
