"""build_snapshot: Kubernetes facts + a fetch -> PoolSnapshot, rule by rule."""

from __future__ import annotations

import math
from types import MappingProxyType

import pytest

from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import BatchGroup, PoolSnapshot
from chiron_operator.metrics.results import (
    OutputLengths,
    PodMetrics,
    PoolMetrics,
    QueuedGroup,
    QueueMetrics,
)
from chiron_operator.metrics.snapshot import (
    PodFacts,
    RoleFacts,
    batch_output_lengths,
    build_snapshot,
)

NOW_S = 1_800_000_000.0
STALENESS_S = 60.0
DEFAULT_DEADLINE_S = 3600.0
ROLES = {
    Role.INTERACTIVE: RoleFacts(2, 1, 1, 32),
    Role.BATCH: RoleFacts(1, 1, 0, 256),
}
PODS = [
    PodFacts("p-interactive-a-1", Role.INTERACTIVE, True, 32),
    PodFacts("p-interactive-a-2", Role.INTERACTIVE, False, 32),
    PodFacts("p-batch-b-1", Role.BATCH, True, 256),
]


def measured(age_s: float = 1.0, running: float = 4.0) -> PodMetrics:
    return PodMetrics(
        running_requests=running,
        waiting_requests=1.0,
        kv_cache_usage_ratio=0.5,
        generation_tokens_per_s=100.0,
        mean_itl_s=0.025,
        itl_s=0.02,
        itl_observations_per_s=90.0,
        ttft_s=0.3,
        ttft_observations_per_s=1.0,
        sample_age_s=age_s,
    )


def fetch(
    pods: dict[str, PodMetrics] | None = None,
    *,
    queue: QueueMetrics | None = None,
    lengths: dict[Role, OutputLengths] | None = None,
    gateway_lengths: OutputLengths | None = None,
    error: str = "",
    fetched_at_s: float = NOW_S,
) -> PoolMetrics:
    return PoolMetrics(
        pods=MappingProxyType(pods or {}),
        output_lengths=MappingProxyType(lengths or {}),
        queue=queue,
        gateway_lengths=gateway_lengths,
        error=error,
        queries=7,
        fetched_at_s=fetched_at_s,
    )


def build(
    metrics: PoolMetrics,
    pods: list[PodFacts] = PODS,
    roles: dict[Role, RoleFacts] = ROLES,
    now_s: float = NOW_S,
) -> PoolSnapshot:
    return build_snapshot(
        now_s,
        roles=roles,
        pods=pods,
        metrics=metrics,
        staleness_s=STALENESS_S,
        batch_deadline_s=DEFAULT_DEADLINE_S,
    )


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_signals_join_kubernetes_pods() -> None:
    snap = build(fetch({"p-interactive-a-1": measured(), "p-terminated-x-1": measured()}))
    pods = {p.name: p for p in snap.all_pods()}
    assert set(pods) == {p.name for p in PODS}  # the terminated pod is ignored
    known = pods["p-interactive-a-1"]
    assert (known.role, known.ready, known.max_num_seqs) == (Role.INTERACTIVE, True, 32)
    assert (known.running_requests, known.waiting_requests) == (4.0, 1.0)
    assert (known.kv_cache_usage_ratio, known.generation_tokens_per_s) == (0.5, 100.0)
    assert known.mean_itl_s == 0.025
    assert (known.itl_s, known.ttft_s, known.sample_age_s) == (0.02, 0.3, 1.0)
    # Real vLLM has no per-class gauges.
    assert math.isnan(known.interactive_running_requests)
    unreported = pods["p-batch-b-1"]
    assert math.isnan(unreported.running_requests)
    assert unreported.sample_age_s == math.inf


def test_roles_come_from_kubernetes() -> None:
    snap = build(fetch())
    assert set(snap.roles) == {Role.INTERACTIVE, Role.BATCH}
    interactive = snap.role(Role.INTERACTIVE)
    assert (interactive.replicas, interactive.ready_replicas) == (2, 1)
    assert (interactive.starting_replicas, interactive.max_num_seqs) == (1, 32)
    assert [p.name for p in interactive.pods] == ["p-interactive-a-1", "p-interactive-a-2"]
    assert snap.role(Role.MIXED).replicas == 0


def test_pods_of_a_role_without_deployment() -> None:
    orphan = PodFacts("p-mixed-c-1", Role.MIXED, False, 64)
    mixed = build(fetch(), pods=[*PODS, orphan]).role(Role.MIXED)
    assert (mixed.replicas, mixed.max_num_seqs, len(mixed.pods)) == (0, 64, 1)


def test_failed_fetch_is_all_unknown() -> None:
    snap = build(
        fetch(
            {"p-interactive-a-1": measured()},
            queue=QueueMetrics((QueuedGroup(1.0, 5),)),
            lengths={Role.BATCH: OutputLengths(1.0, 100.0, 10.0)},
            error="running query failed: cannot connect",
        )
    )
    assert snap.metrics_error == "running query failed: cannot connect"
    assert snap.metrics_age_s == math.inf
    for pod in snap.all_pods():
        assert math.isnan(pod.running_requests)
        assert math.isnan(pod.waiting_requests)
        assert math.isnan(pod.mean_itl_s)
        assert pod.sample_age_s == math.inf
    assert snap.batch_queue.groups == ()
    assert snap.batch_queue.sample_age_s == math.inf
    assert math.isnan(snap.batch_queue.output_tokens_mean)


@pytest.mark.parametrize(
    ("age_s", "fetched_ago_s", "fresh", "reported_age_s"),
    [
        (1.0, 0.0, True, 1.0),
        (60.0, 0.0, True, 60.0),  # at the limit: still fresh
        (55.0, 10.0, False, 65.0),  # aged since the fetch
        (61.0, 0.0, False, 61.0),
        (1.0, -5.0, True, 1.0),  # a fetch "after" now (clock step): no negative ages
    ],
)
def test_staleness(age_s: float, fetched_ago_s: float, fresh: bool, reported_age_s: float) -> None:
    metrics = fetch({"p-interactive-a-1": measured(age_s)}, fetched_at_s=NOW_S - fetched_ago_s)
    pod = build(metrics).role(Role.INTERACTIVE).pods[0]
    assert pod.sample_age_s == pytest.approx(reported_age_s)
    assert math.isfinite(pod.running_requests) is fresh
    assert math.isfinite(pod.mean_itl_s) is fresh
    assert math.isfinite(pod.itl_s) is fresh


def test_unknown_fetch_time_adds_nothing() -> None:
    metrics = fetch({"p-interactive-a-1": measured(2.0)}, fetched_at_s=math.nan)
    assert build(metrics).role(Role.INTERACTIVE).pods[0].sample_age_s == 2.0


def test_zero_is_kept() -> None:
    metrics = fetch({"p-interactive-a-1": measured(running=0.0)})
    assert build(metrics).role(Role.INTERACTIVE).pods[0].running_requests == 0.0


def test_metrics_age_is_the_newest_ready_pod() -> None:
    metrics = fetch({"p-interactive-a-1": measured(7.0), "p-interactive-a-2": measured(0.5)})
    assert build(metrics).metrics_age_s == 7.0  # a-2 is not ready
    assert build(fetch()).metrics_age_s == math.inf


def test_metrics_age_counts_an_answered_queue() -> None:
    assert build(fetch(queue=QueueMetrics())).metrics_age_s == 0.0
    assert build(fetch(queue=QueueMetrics(error="bad"))).metrics_age_s == math.inf


def test_no_queue_configured_is_a_known_empty_queue() -> None:
    queue = build(fetch()).batch_queue
    assert (queue.groups, queue.sample_age_s) == ((), 0.0)


def test_failed_queue_is_unknown() -> None:
    lengths = {Role.BATCH: OutputLengths(1.0, 100.0, 10.0)}
    snap = build(fetch({"p-batch-b-1": measured()}, queue=QueueMetrics(error="x"), lengths=lengths))
    assert snap.batch_queue.sample_age_s == math.inf
    assert snap.batch_queue.output_tokens_mean == 100.0
    assert snap.metrics_error == ""
    assert snap.role(Role.BATCH).pods[0].running_requests == 4.0


def test_queue_deadlines_on_the_unix_clock() -> None:
    default = NOW_S + DEFAULT_DEADLINE_S
    groups = (
        QueuedGroup(NOW_S + 120.0, 7),
        QueuedGroup(default, 1),
        QueuedGroup(NOW_S + 7200.0, 12),
        QueuedGroup(None, 3),
    )
    queue = build(fetch(queue=QueueMetrics(groups)), now_s=NOW_S).batch_queue
    assert queue.groups == (
        BatchGroup(NOW_S + 120.0, 7),
        BatchGroup(default, 4),  # no deadline: the default from now, merged with its twin
        BatchGroup(NOW_S + 7200.0, 12),
    )
    assert queue.queued_requests == 23
    assert queue.sample_age_s == 0.0


@pytest.mark.parametrize(
    ("lengths", "mean"),
    [
        ({}, math.nan),
        ({Role.BATCH: OutputLengths(2.0, 300.0, 30.0)}, 300.0),
        (
            {Role.BATCH: OutputLengths(2.0, 300.0, 30.0), Role.MIXED: OutputLengths(5, 50, 5)},
            300.0,
        ),
        ({Role.BATCH: OutputLengths(0.0), Role.MIXED: OutputLengths(5.0, 50.0, 5.0)}, 50.0),
        ({Role.INTERACTIVE: OutputLengths(9.0, 80.0, 8.0)}, math.nan),
        ({Role.BATCH: OutputLengths(math.nan), Role.MIXED: OutputLengths(0.0)}, math.nan),
    ],
)
def test_output_lengths_prefer_batch_then_mixed(
    lengths: dict[Role, OutputLengths], mean: float
) -> None:
    assert same(batch_output_lengths(lengths).mean, mean)
    assert same(build(fetch(lengths=lengths)).batch_queue.output_tokens_mean, mean)


def test_output_length_samples_from_the_histograms_count() -> None:
    counted = {Role.BATCH: OutputLengths(2.0, 300.0, 30.0, completed_requests=1200.0)}
    assert build(fetch(lengths=counted)).batch_queue.output_tokens_samples == 1200.0
    # Uncounted: treated as many (the mean as exact), never as none.
    uncounted = {Role.BATCH: OutputLengths(2.0, 300.0, 30.0)}
    assert build(fetch(lengths=uncounted)).batch_queue.output_tokens_samples == math.inf
    assert build(fetch()).batch_queue.output_tokens_samples == math.inf


def test_gateway_lengths_replace_the_pods_histograms() -> None:
    # Mixed pods' histograms include interactive requests; the gateway's are batch requests only.
    snap = build(
        fetch(
            queue=QueueMetrics((QueuedGroup(NOW_S + 600.0, 40),), sample_age_s=2.0),
            lengths={Role.MIXED: OutputLengths(5.0, 50.0, 5.0, completed_requests=3000.0)},
            gateway_lengths=OutputLengths(0.05, 400.0, 120.0, completed_requests=30.0),
            fetched_at_s=NOW_S - 3.0,
        )
    )
    queue = snap.batch_queue
    assert (queue.output_tokens_mean, queue.output_tokens_std) == (400.0, 120.0)
    assert queue.output_tokens_samples == 30.0
    assert queue.groups == (BatchGroup(NOW_S + 600.0, 40),)
    assert queue.sample_age_s == 5.0  # the gateway's newest sample, aged since the fetch


def test_gateway_with_nothing_completed_has_unknown_lengths() -> None:
    # Not the pods' histograms instead: those would mix interactive requests back in.
    snap = build(
        fetch(
            queue=QueueMetrics(()),
            lengths={Role.MIXED: OutputLengths(5.0, 50.0, 5.0, completed_requests=3000.0)},
            gateway_lengths=OutputLengths(0.0, math.nan, math.nan, completed_requests=0.0),
        )
    )
    assert math.isnan(snap.batch_queue.output_tokens_mean)
    assert snap.batch_queue.output_tokens_samples == math.inf


def test_unscraped_gateway_is_an_unknown_queue() -> None:
    snap = build(fetch({"p-batch-b-1": measured()}, queue=QueueMetrics(sample_age_s=math.inf)))
    assert snap.batch_queue.sample_age_s == math.inf
    assert snap.metrics_age_s == 1.0  # the pods' signals are still fresh
