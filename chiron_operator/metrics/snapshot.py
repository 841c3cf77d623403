"""Kubernetes facts + one Prometheus fetch -> the `PoolSnapshot` the controllers decide on.

Pure: no clock (`now_s` is passed in) and no I/O. Kubernetes is the source of truth for which
pods exist and their roles; Prometheus only adds signals to them:

- A pod Prometheus reports but Kubernetes does not list (terminated, or another pool's pod the
  name regex could not tell apart) is ignored.
- A pod Kubernetes lists but Prometheus does not report has NaN signals and age inf.
- A failed fetch (`PoolMetrics.error`) sets `PoolSnapshot.metrics_error` and leaves every
  signal NaN, every age inf: never zeros, and never a stale value from an earlier tick.
- Stale: a pod whose newest sample is older than `staleness_s` gets NaN signals; its
  `sample_age_s` keeps the true age so guard rails and status can say how old it is. Ages
  grow by the time between the fetch and `now_s`.
- The clock is unix seconds: `now_s` is the operator's `time.time()`, and the batch queue's
  deadline label is unix seconds too, so deadlines are used as they are. A group without a
  deadline (or an unreadable one) gets `now_s + batch_deadline_s`: its submission time is
  unknown, so the pool's default deadline is counted from now.
- Batch queue: a pool with a gateway reads the gateway's (unless `spec.batchQueue` names
  another); a pool with neither has no batch queue, which is known and empty (age 0). A failed
  user query, or a gateway Prometheus has no sample of, makes the queue unknown (age inf), so
  batch decisions hold while interactive ones go on. The gateway's queue is as old as its
  newest sample; a user query's age is its evaluation time (the adapter cannot see the samples
  behind an arbitrary query). Both grow by the time since the fetch.
- Output lengths (mean, spread, and the count of requests they were estimated from) come from
  the gateway's completed batch requests when the queue is the gateway's: batch requests only.
  Otherwise from the batch pods' completions over the length window; while no batch pod
  completed anything, from the mixed pods' (which include interactive requests); never from
  interactive pods. NaN when nothing completed; the count is inf when unknown (the mean is then
  taken as exact, see `control.waiting_time`).
- `metrics_age_s` is the newest age among ready pods and a configured, answered batch queue,
  as the simulator's observer computes it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import (
    BatchGroup,
    BatchQueue,
    PodSignals,
    PoolSnapshot,
    RoleSnapshot,
)
from chiron_operator.metrics.results import OutputLengths, PodMetrics, PoolMetrics

# Where the batch queue's output-length statistics are learned from, in order of preference.
LENGTH_ROLES = (Role.BATCH, Role.MIXED)


@dataclass(frozen=True, slots=True)
class RoleFacts:
    """One role's Deployment as Kubernetes reports it."""

    replicas: int
    ready_replicas: int
    starting_replicas: int
    max_num_seqs: int


@dataclass(frozen=True, slots=True)
class PodFacts:
    """One pod as Kubernetes reports it (role from its labels, not its name)."""

    name: str
    role: Role
    ready: bool
    max_num_seqs: int


def build_snapshot(
    now_s: float,
    *,
    roles: Mapping[Role, RoleFacts],
    pods: Iterable[PodFacts],
    metrics: PoolMetrics,
    staleness_s: float,
    batch_deadline_s: float,
) -> PoolSnapshot:
    """The pool as the controllers see it at `now_s` (unix seconds)."""
    elapsed_s = _elapsed(now_s, metrics)
    signals = [_pod(p, metrics, elapsed_s, staleness_s) for p in pods]
    grouped: dict[Role, list[PodSignals]] = defaultdict(list)
    for pod in signals:
        grouped[pod.role].append(pod)
    role_snapshots = {
        role: _role(role, roles.get(role), tuple(grouped.get(role, ())))
        for role in Role
        if role in roles or role in grouped
    }
    queue = _batch_queue(metrics, now_s, elapsed_s, batch_deadline_s)
    ages = [p.sample_age_s for p in signals if p.ready]
    if metrics.queue is not None:
        ages.append(queue.sample_age_s)
    return PoolSnapshot(
        now_s=now_s,
        roles=role_snapshots,
        batch_queue=queue,
        metrics_age_s=min(ages, default=math.inf),
        metrics_error=metrics.error,
    )


def _elapsed(now_s: float, metrics: PoolMetrics) -> float:
    # Time between the fetch and the snapshot; the operator's clock at both ends.
    since = now_s - metrics.fetched_at_s
    return max(0.0, since) if math.isfinite(since) else 0.0


def _role(role: Role, facts: RoleFacts | None, pods: tuple[PodSignals, ...]) -> RoleSnapshot:
    if facts is None:
        # Pods whose Deployment is gone (still terminating): no replicas to speak of.
        return RoleSnapshot(role, 0, 0, 0, max((p.max_num_seqs for p in pods), default=0), pods)
    return RoleSnapshot(
        role,
        replicas=facts.replicas,
        ready_replicas=facts.ready_replicas,
        starting_replicas=facts.starting_replicas,
        max_num_seqs=facts.max_num_seqs,
        pods=pods,
    )


def _pod(facts: PodFacts, metrics: PoolMetrics, elapsed_s: float, staleness_s: float) -> PodSignals:
    found: PodMetrics | None = None if metrics.error else metrics.pods.get(facts.name)
    if found is None:
        return PodSignals(facts.name, facts.role, facts.ready, facts.max_num_seqs)
    age_s = found.sample_age_s + elapsed_s
    if not age_s <= staleness_s:
        return PodSignals(
            facts.name, facts.role, facts.ready, facts.max_num_seqs, sample_age_s=age_s
        )
    return PodSignals(
        facts.name,
        facts.role,
        facts.ready,
        _cap(facts.max_num_seqs, found.gateway_cap_seqs),
        running_requests=found.running_requests,
        interactive_running_requests=found.interactive_running_requests,
        waiting_requests=found.waiting_requests,
        kv_cache_usage_ratio=found.kv_cache_usage_ratio,
        generation_tokens_per_s=found.generation_tokens_per_s,
        mean_itl_s=found.mean_itl_s,
        itl_s=found.itl_s,
        ttft_s=found.ttft_s,
        sample_age_s=age_s,
    )


def _cap(max_num_seqs: int, gateway_cap_seqs: float) -> int:
    """What the pod admits: the gateway's cap when it reports one below --max-num-seqs.

    Busy and saturated are judged against this: with the fast path a pod is full at its
    target, long before it reaches the ceiling its engine runs with.
    """
    if not math.isfinite(gateway_cap_seqs) or gateway_cap_seqs < 1:
        return max_num_seqs
    return min(max_num_seqs, int(gateway_cap_seqs))


def batch_output_lengths(lengths: Mapping[Role, OutputLengths]) -> OutputLengths:
    """The output-length statistics the batch queue's waiting-time bound should use."""
    for role in LENGTH_ROLES:
        found = lengths.get(role)
        if found is not None and found.requests_per_s > 0 and math.isfinite(found.mean):
            return found
    return OutputLengths()


def _batch_queue(
    metrics: PoolMetrics, now_s: float, elapsed_s: float, batch_deadline_s: float
) -> BatchQueue:
    if metrics.error:
        return BatchQueue()
    lengths = metrics.gateway_lengths
    if lengths is None:
        lengths = batch_output_lengths(metrics.output_lengths)
    samples = lengths.completed_requests
    known = BatchQueue(
        output_tokens_mean=lengths.mean,
        output_tokens_std=lengths.std,
        output_tokens_samples=samples if math.isfinite(samples) and samples > 0 else math.inf,
    )
    if metrics.queue is None:
        return replace(known, sample_age_s=0.0)
    if metrics.queue.error:
        return replace(known, sample_age_s=math.inf)
    merged: dict[float, int] = defaultdict(int)
    for group in metrics.queue.groups:
        deadline_s = now_s + batch_deadline_s if group.deadline_s is None else group.deadline_s
        merged[deadline_s] += group.queued_requests
    groups = tuple(BatchGroup(d, merged[d]) for d in sorted(merged))
    return replace(known, groups=groups, sample_age_s=metrics.queue.sample_age_s + elapsed_s)
