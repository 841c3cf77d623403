"""Shared reads of a pool snapshot for the global controller's interactive and batch rules.

Load reads (`interactive_load`, `batch_running`, `mixed_utilization`) take the newest gauges:
they judge how full a pod is now, which a window's average would report late. `mean_itl_s`,
a ratio of two rates, is the source's own estimate over the newest scrape intervals.
"""

from __future__ import annotations

import math

from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, is_known
from chiron_operator.core.tuning import PoolTuning

# Absorbs float noise in ceil(): 0.65 * 20 must need 13 instances, not 14.
CEIL_EPS = 1e-9


def mean_itl_s(pod: PodSignals) -> float:
    """A pod's mean inter-token latency: mean running sequences / tokens per second.

    Every running sequence gets one token per iteration, so tokens per second per sequence is
    the iteration rate and its inverse the mean gap between a sequence's tokens, stalls for
    other requests' prefills included. That is what a request's mean ITL (TPOT), the figure
    the ITL SLO is checked on, averages. A quantile of vLLM's per-gap histogram is not: when
    more than 1 - percentile of iterations admit a prompt, it is the prefill stall itself,
    which no batch size removes. NaN when the pod runs nothing or reports no throughput.

    The source's `mean_itl_s` takes both over the same short range (`itl_window_s`). The newest
    gauge over the window's rate reads a load step as latency (4 -> 32 sequences late in the
    window: 8x the sequences over a rate still mostly made by 4), which halved batch sizes in
    the middle of a surge. That ratio stands in only when a source reports no estimate: in a
    steady state the two agree, and dropping it would leave the ITL objective unguarded.
    """
    if is_known(pod.mean_itl_s) and pod.mean_itl_s > 0.0:
        return pod.mean_itl_s
    running, rate = pod.running_requests, pod.generation_tokens_per_s
    if not (is_known(running) and is_known(rate)) or running <= 0.0 or rate <= 0.0:
        return math.nan
    return running / rate


def allowed(tuning: PoolTuning, role: Role) -> bool:
    return tuning.role_bounds(role).max_replicas > 0


def fresh_pods(snapshot: PoolSnapshot, role: Role, staleness_s: float) -> list[PodSignals]:
    return [p for p in snapshot.role(role).pods if p.ready and p.sample_age_s <= staleness_s]


def interactive_load(pod: PodSignals) -> tuple[float, float]:
    """(running, waiting) interactive requests; the totals stand in when the split is unknown.

    Counting a mixed pod's batch load as interactive errs towards 'busy', i.e. towards capacity.
    """
    running = pod.interactive_running_requests
    waiting = pod.interactive_waiting_requests
    if not is_known(running):
        running = pod.running_requests
    if not is_known(waiting):
        waiting = pod.waiting_requests
    return running, waiting


def batch_running(pod: PodSignals) -> float:
    """Batch requests running on a pod; NaN when the source does not split by class."""
    if not (is_known(pod.running_requests) and is_known(pod.interactive_running_requests)):
        return math.nan
    return max(0.0, pod.running_requests - pod.interactive_running_requests)


def mixed_utilization(snapshot: PoolSnapshot, staleness_s: float) -> float:
    """Mean running/max-num-seqs over fresh mixed pods (all classes); NaN when none reports."""
    ratios = [
        p.running_requests / max(p.max_num_seqs, 1)
        for p in fresh_pods(snapshot, Role.MIXED, staleness_s)
        if is_known(p.running_requests)
    ]
    return sum(ratios) / len(ratios) if ratios else math.nan


def hold_all(
    snapshot: PoolSnapshot, roles: list[Role], reason: Reason, why: str
) -> dict[Role, Verdict]:
    return {
        r: Verdict(snapshot.role(r).replicas, reason, f"{why}: hold {snapshot.role(r).replicas}")
        for r in roles
    }
