"""PromQL for one pool: one batched query per signal, constant in the pool's pod count.

Every query selects the pool's pods at once, by namespace and a pod-name regex, and groups by
pod; no query is ever issued per pod. A tick issues at most eight queries (seven for the pods
and the batch signals, one for a user's `spec.batchQueue` query) whether the pool runs two pods
or two hundred.

Queries that need more than one vector join them with `or` and tag each side with the label
`chiron_part` (`label_replace(expr, "chiron_part", "<part>", "", "")`): the tags make the
sides' label sets disjoint, so `or` keeps every series, and the parser reads each side back by
its tag. This folds a signal's companions into the signal's own query instead of spending more
round trips on them:

- running requests carry each pod's newest sample timestamp (its age) and its mean ITL: the
  gauge's mean (`avg_over_time`) over the token rate, both over the newest two scrape intervals
  (`itl_window_s`); the newest sample alone over the window's rate would pair one instant with
  a window's average and spike at every load step;
- KV-cache usage and ITL query both vLLM name generations side by side, which is also how the
  adapter discovers which generation each pod exports (no separate discovery query, and no
  cache that could lag a rolling upgrade);
- latency quantiles carry the rate of their histogram's `_count`, which tells "no traffic"
  (rate 0: the quantile is NaN, the load is known to be zero) from "no data" (absent);
- with the pool's gateway, running requests also carry what vLLM cannot say: each pod's
  interactive requests in flight and its cap (min of --max-num-seqs and the target), summed
  over the gateway's replicas (`chiron_gateway_*`, labelled by `target_pod`);
- with the pool's gateway and no `spec.batchQueue`, the batch signals come from the gateway,
  which holds the pool's batch queue: one query carries the queue per deadline (summed over the
  gateway's replicas; only the dispatching replica reports Batch API work), the newest sample
  time of the gateway's queue gauges (the queue's age: no series means the gateway is not
  scraped, which is unknown, not an empty queue), and, over the length window, the count, sum
  and sum of squares of the output tokens of completed batch requests (`increase`, which
  survives a gateway restart's counter reset). These are batch requests only, unlike vLLM's
  length histograms, which mix in the interactive requests of mixed pods.

Pod names: the operator's Deployments are `<pool>-<role>`, so their pods are
`<pool>-<role>-<template hash>-<random>`. The regex allows one or two suffix segments (long names
are truncated by the API server's generateName, which can swallow the hash) but not three, so pool
`a` never selects pool `a-batch`'s pods (`a-batch-interactive-<hash>-<random>`). The gateway's
Deployment is `<pool>-gateway`: its pods are matched with exactly two suffix segments, so pool
`a` never selects pool `a-gateway`'s gateway (`a-gateway-gateway-<hash>-<random>`).

A scrape job per pod is the common setup, but two jobs scraping one pod (a PodMonitor and an
annotation-based job, say) are a frequent accident: every per-pod aggregation first takes
`max by (pod, engine)`, so duplicated series count once while vLLM's data-parallel engines
(the `engine` label) still add up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.api.status import MetricNames
from chiron_operator.core.snapshot import itl_window_s as itl_range_s
from chiron_operator.metrics.batch_queue import queue_query
from chiron_operator.metrics.literals import duration, regex_literal, string_literal

PART_LABEL: Final = "chiron_part"
ROLE_LABEL: Final = "chiron_role"
ENGINE_LABEL: Final = "engine"
ROLES_REGEX: Final = "(interactive|mixed|batch)"
# Deployment pod names end in `-<template hash>-<random>`; see the module docstring.
POD_SUFFIX_REGEX: Final = "[a-z0-9]+(-[a-z0-9]+)?"

RUNNING: Final = "vllm:num_requests_running"
WAITING: Final = "vllm:num_requests_waiting"
GENERATION_TOKENS: Final = "vllm:generation_tokens_total"
TTFT: Final = "vllm:time_to_first_token_seconds"
OUTPUT_LENGTH: Final = "vllm:request_generation_tokens"
KV_CACHE: Final[Mapping[MetricNames, str]] = {
    MetricNames.V1: "vllm:kv_cache_usage_perc",
    MetricNames.LEGACY: "vllm:gpu_cache_usage_perc",
}
ITL: Final[Mapping[MetricNames, str]] = {
    MetricNames.V1: "vllm:inter_token_latency_seconds",
    MetricNames.LEGACY: "vllm:time_per_output_token_seconds",
}
GENERATIONS: Final = (MetricNames.V1, MetricNames.LEGACY)
GATEWAY_IN_FLIGHT: Final = "chiron_gateway_in_flight_requests"
GATEWAY_POD_CAP: Final = "chiron_gateway_pod_cap_seqs"
GATEWAY_TARGET_LABEL: Final = "target_pod"
GATEWAY_BATCH_QUEUED: Final = "chiron_gateway_batch_queued_requests"
# Exported at every scrape beside the queue, which has no series while it is empty.
GATEWAY_BATCH_QUEUED_TOKENS: Final = "chiron_gateway_batch_queued_tokens"
GATEWAY_OUTPUT_TOKENS: Final = "chiron_gateway_batch_output_tokens"
GATEWAY_OUTPUT_TOKENS_SQUARES: Final = "chiron_gateway_batch_output_tokens_squares_total"
GATEWAY_DEADLINE_LABEL: Final = "deadline"
# The gateway Deployment's pods: `<pool>-gateway-<template hash>-<random>`, both segments.
GATEWAY_POD_SUFFIX_REGEX: Final = "gateway-[a-z0-9]+-[a-z0-9]+"


class Signal(StrEnum):
    """One query of a tick; the value names it in errors and in the query count."""

    RUNNING = "running"
    WAITING = "waiting"
    KV_CACHE = "kv_cache"
    GENERATION_TOKENS = "generation_tokens"
    ITL = "itl"
    TTFT = "ttft"
    OUTPUT_LENGTH = "output_length"
    GATEWAY_BATCH = "gateway_batch"
    BATCH_QUEUE = "batch_queue"


class Part(StrEnum):
    """Values of the `chiron_part` tag inside one query."""

    VALUE = "value"
    TIMESTAMP = "timestamp"
    MEAN_ITL = "mean_itl"
    QUANTILE = "quantile"
    OBSERVATIONS = "observations"
    BUCKET = "bucket"
    SUM = "sum"
    SQUARES = "squares"
    QUEUE = "queue"
    GATEWAY_INTERACTIVE = "gateway_interactive"
    GATEWAY_CAP = "gateway_cap"


def part_tag(part: Part, generation: MetricNames | None = None) -> str:
    """The tag of a part, qualified by the name generation it was read from, if any."""
    return part.value if generation is None else f"{part.value}:{generation.value}"


@dataclass(frozen=True, slots=True)
class PoolSelector:
    """Which series belong to a pool: its namespace and its pods' names."""

    namespace: str
    pool: str
    pod_label: str = "pod"
    namespace_label: str = "namespace"

    def pod_regex(self) -> str:
        """Names of the pool's Deployment pods, any role."""
        return f"{regex_literal(self.pool)}-{ROLES_REGEX}-{POD_SUFFIX_REGEX}"

    def gateway_pod_regex(self) -> str:
        """Names of the pool's gateway pods (the `<pool>-gateway` Deployment's)."""
        return f"{regex_literal(self.pool)}-{GATEWAY_POD_SUFFIX_REGEX}"

    def select_gateway(self, metric: str) -> str:
        """An instant selector of a series the pool's gateway pods export about themselves."""
        matchers = (
            f"{self.namespace_label}={string_literal(self.namespace)},"
            f"{self.pod_label}=~{string_literal(self.gateway_pod_regex())}"
        )
        return f"{metric}{{{matchers}}}"

    def matchers(self) -> str:
        """The label matchers every query of the pool uses (without braces)."""
        return (
            f"{self.namespace_label}={string_literal(self.namespace)},"
            f"{self.pod_label}=~{string_literal(self.pod_regex())}"
        )

    def select(self, metric: str) -> str:
        """An instant selector of `metric` restricted to the pool."""
        return f"{metric}{{{self.matchers()}}}"

    def select_targets(self, metric: str, extra: str = "") -> str:
        """A gateway series about the pool's pods (named by `target_pod`, not `pod`)."""
        matchers = (
            f"{self.namespace_label}={string_literal(self.namespace)},"
            f"{GATEWAY_TARGET_LABEL}=~{string_literal(self.pod_regex())}"
        )
        return f"{metric}{{{matchers}{extra}}}"

    def per_target(self, inner: str) -> str:
        """A gateway series summed over the gateway's replicas, per pod it is about.

        `max by (target_pod, pod)` first counts a replica scraped twice once (the gateway pod
        is the series' own `pod`); the sum then adds the replicas' shares up, and the result
        is renamed to the pool's pod label so that it reads like every other per-pod signal.
        """
        target, pod = GATEWAY_TARGET_LABEL, self.pod_label
        summed = f"sum by ({target}) (max by ({target}, {pod}) ({inner}))"
        return f'label_replace({summed}, "{pod}", "$1", "{target}", "(.+)")'

    def deduplicated(self, inner: str, keep: tuple[str, ...] = ()) -> str:
        """`inner` reduced to one series per (pod, engine, *keep) whichever jobs scraped it."""
        return f"max by ({_labels(self.pod_label, ENGINE_LABEL, *keep)}) ({inner})"

    def per_pod(self, aggregation: str, inner: str, keep: tuple[str, ...] = ()) -> str:
        """`aggregation by (pod, *keep)` over the deduplicated `inner`."""
        grouped = _labels(self.pod_label, *keep)
        return f"{aggregation} by ({grouped}) ({self.deduplicated(inner, keep)})"


def _labels(*names: str) -> str:
    return ", ".join(names)


def tagged(expr: str, tag: str) -> str:
    """`expr` with every series labelled `chiron_part=tag`."""
    return f'label_replace({expr}, "{PART_LABEL}", "{tag}", "", "")'


def union(*exprs: str) -> str:
    """The series of every expression (their tags keep the label sets disjoint)."""
    return " or ".join(exprs)


GATEWAY_LENGTH_WINDOW_S: Final = 1800.0
"""The shortest range over which the gateway's batch output lengths are read. They are batch
requests only and exact (no buckets), and they move slowly; a long range gives the mean from
many completions, which the waiting-time bound rewards (its n^2/m term shrinks as m grows)."""


@dataclass(frozen=True, slots=True)
class PoolQuery:
    """Everything needed to read one pool: selector, windows, percentile and batch queue.

    `window_s` is the range of rates and quantiles. `length_window_s` is the range of the
    output-length statistics, which may be longer: lengths are a slowly moving distribution
    and a short window sees few completions. `itl_window_s` is the mean ITL's range, shorter:
    the local controller acts on it (`core.snapshot.itl_window_s`); 0 means `window_s`.
    `gateway`: the pool runs its gateway; then, unless the user names a `queue_query`, the
    batch queue and the output lengths are the gateway's (`gateway_batch`), the lengths over
    `gateway_length_window_s`. `queue_refusal` says why the user's queue is not read (raw
    PromQL the operator may not run, `metrics.batch_queue`): then no queue is read at all.
    """

    selector: PoolSelector
    window_s: float
    quantile: float
    length_window_s: float
    queue_query: str | None = None
    itl_window_s: float = 0.0
    deadline_label: str = "deadline"
    gateway: bool = False
    gateway_length_window_s: float = GATEWAY_LENGTH_WINDOW_S
    queue_refusal: str = ""

    @classmethod
    def from_spec(
        cls,
        namespace: str,
        pool: str,
        spec: LLMServingPoolSpec,
        length_window_s: float | None = None,
        *,
        allow_promql: bool = False,
    ) -> PoolQuery:
        """The query a pool's spec asks for; the length window defaults to the spec's window.

        `allow_promql`: the admin lets pools' raw `queuedRequestsQuery` run (refused otherwise).
        """
        prometheus = spec.prometheus
        queue = spec.batch_queue
        selector = PoolSelector(namespace, pool, pod_label=prometheus.pod_label)
        promql, refusal = queue_query(
            queue, namespace, allow_promql=allow_promql, namespace_label=selector.namespace_label
        )
        return cls(
            selector=selector,
            window_s=prometheus.window_s,
            quantile=spec.slo.percentile_ratio,
            length_window_s=length_window_s or prometheus.window_s,
            queue_query=promql,
            queue_refusal=refusal,
            deadline_label=queue.deadline_label if queue else "deadline",
            itl_window_s=itl_range_s(prometheus.scrape_interval_s, prometheus.window_s),
            gateway=spec.gateway.enabled,
        )

    @property
    def gateway_batch(self) -> bool:
        """The batch signals come from the pool's gateway (it has one, and no user queue)."""
        return self.gateway and self.queue_query is None and not self.queue_refusal

    def queries(self) -> dict[Signal, str]:
        """The tick's queries in issue order (pod signals first, the batch signals last)."""
        found = {
            Signal.RUNNING: self._running(),
            Signal.WAITING: self.selector.per_pod("sum", self.selector.select(WAITING)),
            Signal.KV_CACHE: self._kv_cache(),
            Signal.GENERATION_TOKENS: self.selector.per_pod(
                "sum", self._rate(GENERATION_TOKENS, self.window_s)
            ),
            Signal.ITL: union(*(self._latency(ITL[g], g) for g in GENERATIONS)),
            Signal.TTFT: self._latency(TTFT, None),
        }
        if self.gateway_batch:
            found[Signal.GATEWAY_BATCH] = self._gateway_batch()
        else:
            found[Signal.OUTPUT_LENGTH] = self._output_length()
        if self.queue_query is not None:
            found[Signal.BATCH_QUEUE] = self.queue_query
        return found

    def _rate(self, series: str, window_s: float) -> str:
        return f"rate({self.selector.select(series)}[{duration(window_s)}])"

    def _running(self) -> str:
        selected = self.selector.select(RUNNING)
        pod = self.selector.pod_label
        # Both over one range, so that the ratio describes one stretch of time.
        range_s = self.itl_window_s or self.window_s
        running = self.selector.per_pod("sum", f"avg_over_time({selected}[{duration(range_s)}])")
        tokens = self.selector.per_pod("sum", self._rate(GENERATION_TOKENS, range_s))
        parts = [
            tagged(self.selector.per_pod("sum", selected), part_tag(Part.VALUE)),
            tagged(f"max by ({pod}) (timestamp({selected}))", part_tag(Part.TIMESTAMP)),
            tagged(f"{running} / {tokens}", part_tag(Part.MEAN_ITL)),
        ]
        if self.gateway:
            interactive = self.selector.select_targets(GATEWAY_IN_FLIGHT, ',class="interactive"')
            cap = self.selector.select_targets(GATEWAY_POD_CAP)
            parts.append(
                tagged(self.selector.per_target(interactive), part_tag(Part.GATEWAY_INTERACTIVE))
            )
            parts.append(tagged(self.selector.per_target(cap), part_tag(Part.GATEWAY_CAP)))
        return union(*parts)

    def _kv_cache(self) -> str:
        # avg, not sum: each data-parallel engine has its own cache, and the ratio is per cache.
        return union(
            *(
                tagged(
                    self.selector.per_pod("avg", self.selector.select(KV_CACHE[g])),
                    part_tag(Part.VALUE, g),
                )
                for g in GENERATIONS
            )
        )

    def _latency(self, histogram: str, generation: MetricNames | None) -> str:
        buckets = self.selector.per_pod(
            "sum", self._rate(f"{histogram}_bucket", self.window_s), ("le",)
        )
        count = self.selector.per_pod("sum", self._rate(f"{histogram}_count", self.window_s))
        return union(
            tagged(
                f"histogram_quantile({self.quantile!r}, {buckets})",
                part_tag(Part.QUANTILE, generation),
            ),
            tagged(count, part_tag(Part.OBSERVATIONS, generation)),
        )

    def _output_length(self) -> str:
        return union(
            tagged(self._per_role(f"{OUTPUT_LENGTH}_bucket", ("le",)), part_tag(Part.BUCKET)),
            tagged(self._per_role(f"{OUTPUT_LENGTH}_sum", ()), part_tag(Part.SUM)),
        )

    def _gateway_batch(self) -> str:
        selector, pod = self.selector, self.selector.pod_label
        deadline = GATEWAY_DEADLINE_LABEL
        # `max by (pod, ...)` first everywhere: a gateway replica scraped twice counts once.
        queued = selector.select_gateway(GATEWAY_BATCH_QUEUED)
        queue = f"sum by ({deadline}) (max by ({_labels(pod, deadline)}) ({queued}))"
        newest = f"max(timestamp({selector.select_gateway(GATEWAY_BATCH_QUEUED_TOKENS)}))"
        parts = [tagged(queue, part_tag(Part.QUEUE)), tagged(newest, part_tag(Part.TIMESTAMP))]
        window = duration(self.gateway_length_window_s)
        for series, part in (
            (f"{GATEWAY_OUTPUT_TOKENS}_count", Part.OBSERVATIONS),
            (f"{GATEWAY_OUTPUT_TOKENS}_sum", Part.SUM),
            (GATEWAY_OUTPUT_TOKENS_SQUARES, Part.SQUARES),
        ):
            completed = f"increase({selector.select_gateway(series)}[{window}])"
            parts.append(tagged(f"sum(max by ({pod}) ({completed}))", part_tag(part)))
        return union(*parts)

    def _per_role(self, series: str, keep: tuple[str, ...]) -> str:
        # Per role, not per pod: the batch queue's lengths come from the pods serving batch
        # work, and the result stays a handful of series however many pods there are.
        pod = self.selector.pod_label
        rates = self.selector.deduplicated(self._rate(series, self.length_window_s), keep)
        role_regex = f"{regex_literal(self.selector.pool)}-{ROLES_REGEX}-.*"
        with_role = (
            f'label_replace({rates}, "{ROLE_LABEL}", "$1", "{pod}", {string_literal(role_regex)})'
        )
        return f"sum by ({_labels(ROLE_LABEL, *keep)}) ({with_role})"
