"""The CLT waiting-time bound of Chiron/QLM and the batch backpressure built on it.

A queued request waits for every output token ahead of it: W = tokens ahead / throughput. The
tokens T of n requests sum to n*mu with spread sigma*sqrt(n) (central limit theorem). Chiron
takes mu as known; here it is estimated, as mu^ from the m completed requests the lengths were
learned from, with standard error sigma/sqrt(m). The queued requests are not among those m, so
T - n*mu^ has mean 0 and variance n*sigma^2 (the requests' own spread) + n^2*sigma^2/m (the
error of mu^, multiplied by n). Hence

    T_p = n*mu^ + z*sigma*sqrt(n + n^2/m),    W_p = T_p / Theta,

exceeded with probability about 1 - p. With m unknown (inf) it is Chiron's n*mu + z*sigma*sqrt(n).
The relative margin z*(sigma/mu)*sqrt(1/n + 1/m) shrinks as the queue grows, down to
z*(sigma/mu)/sqrt(m): a long backlog is predictable, up to how well the mean is known, which is
why batch work may wait for its deadline instead of forcing scale-out on queue length, and why a
mean learned from a handful of requests must not be trusted with a backlog of thousands.

Groups are served earliest-deadline-first, so a group waits for its own requests and for every
group due no later than it (ties included: equal deadlines are served in no promised order).

Unknown output lengths (mu or sigma NaN, as before any batch request has completed, or m not a
positive count) make every bound NaN rather than a guess from a prior: the caller sees
"unknown" and holds, instead of scaling on a number that only looks measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

from chiron_operator.core.snapshot import BatchQueue, is_known


def queued_tokens_bound(
    queued_requests: float,
    output_tokens_mean: float,
    output_tokens_std: float,
    z: float,
    *,
    mean_samples: float,
) -> float:
    """Upper bound n*mu + z*sigma*sqrt(n + n^2/m) on the output tokens of n queued requests.

    `mean_samples` is m, the completed requests mu and sigma were estimated from (inf: mu is
    exact). NaN when m is not a positive count: a mean of nothing bounds nothing.
    """
    n = queued_requests
    if n <= 0:
        return 0.0
    if not mean_samples > 0:
        return math.nan
    spread = output_tokens_std * math.sqrt(n + n * n / mean_samples)
    return n * output_tokens_mean + z * spread


def waiting_time_bound_s(
    queued_requests: float,
    output_tokens_mean: float,
    output_tokens_std: float,
    throughput_tokens_per_s: float,
    z: float,
    *,
    mean_samples: float,
) -> float:
    """Conservative time (s) to drain n queued requests at Theta tokens/s.

    0 for an empty queue; inf when there is work and no throughput; NaN when any input is NaN.
    """
    if math.isnan(queued_requests) or math.isnan(throughput_tokens_per_s):
        return math.nan
    if queued_requests <= 0:
        return 0.0
    tokens = queued_tokens_bound(
        queued_requests, output_tokens_mean, output_tokens_std, z, mean_samples=mean_samples
    )
    if throughput_tokens_per_s <= 0:
        return math.nan if math.isnan(tokens) else math.inf
    return tokens / throughput_tokens_per_s


@dataclass(frozen=True, slots=True)
class BatchAssessment:
    """How the batch backlog stands against its deadlines at one throughput.

    `required_throughput_tokens_per_s` is inf when a deadline has already passed (no throughput
    saves it); `open_required_throughput_tokens_per_s` is the same least throughput over the
    groups still open, which is what more capacity can still help. `open_demands` are those
    groups' (output-token bound of the work due by them, seconds left), deadline order. With
    unknown output lengths (or a NaN throughput) the float fields are NaN, `open_demands` is
    empty and `groups_at_risk` counts only the overdue groups, late whatever the lengths.
    """

    backpressure_ratio: float
    groups_at_risk: int
    groups: int
    worst_slack_s: float
    required_throughput_tokens_per_s: float
    open_required_throughput_tokens_per_s: float
    open_demands: tuple[tuple[float, float], ...] = ()


def assess_batch(
    queue: BatchQueue, now_s: float, throughput_tokens_per_s: float, z: float
) -> BatchAssessment:
    """Batch backpressure (BBP): the share of deadline groups whose bound exceeds time left.

    Empty groups are ignored: they have nothing to be late with.
    """
    groups = sorted((g for g in queue.groups if g.queued_requests > 0), key=lambda g: g.deadline_s)
    time_left_s = [g.deadline_s - now_s for g in groups]
    overdue = sum(1 for t in time_left_s if t <= 0)
    if not groups:
        return BatchAssessment(0.0, 0, 0, math.inf, 0.0, 0.0)
    mean, std = queue.output_tokens_mean, queue.output_tokens_std
    samples = queue.output_tokens_samples
    lengths_known = is_known(mean) and is_known(std) and samples > 0
    if not lengths_known or math.isnan(throughput_tokens_per_s):
        nan = math.nan
        return BatchAssessment(nan, overdue, len(groups), nan, nan, nan)
    ahead = _requests_ahead([g.deadline_s for g in groups], [g.queued_requests for g in groups])
    tokens = [queued_tokens_bound(n, mean, std, z, mean_samples=samples) for n in ahead]
    slack_s = [
        t - waiting_time_bound_s(n, mean, std, throughput_tokens_per_s, z, mean_samples=samples)
        for n, t in zip(ahead, time_left_s, strict=True)
    ]
    at_risk = sum(1 for s in slack_s if s < 0)
    needs = [k / t if t > 0 else math.inf for k, t in zip(tokens, time_left_s, strict=True)]
    demands = tuple((k, t) for k, t in zip(tokens, time_left_s, strict=True) if t > 0)
    return BatchAssessment(
        backpressure_ratio=at_risk / len(groups),
        groups_at_risk=at_risk,
        groups=len(groups),
        worst_slack_s=min(slack_s),
        required_throughput_tokens_per_s=max(needs),
        open_required_throughput_tokens_per_s=max((k / t for k, t in demands), default=0.0),
        open_demands=demands,
    )


def _requests_ahead(deadlines_s: list[float], counts: list[int]) -> list[int]:
    """Per group (sorted by deadline), the requests due no later than it, its own included."""
    cumulative = list(accumulate(counts))
    by_deadline = dict(zip(deadlines_s, cumulative, strict=True))  # last of a tie run wins
    return [by_deadline[d] for d in deadlines_s]
