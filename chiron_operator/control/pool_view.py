"""Shared reads of a pool snapshot for the global controller's interactive and batch rules."""

from __future__ import annotations

import math

from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, is_known
from chiron_operator.core.tuning import PoolTuning

# Absorbs float noise in ceil(): 0.65 * 20 must need 13 instances, not 14.
CEIL_EPS = 1e-9


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


def hold_all(
    snapshot: PoolSnapshot, roles: list[Role], reason: Reason, why: str
) -> dict[Role, Verdict]:
    return {
        r: Verdict(snapshot.role(r).replicas, reason, f"{why}: hold {snapshot.role(r).replicas}")
        for r in roles
    }
