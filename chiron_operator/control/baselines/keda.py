"""KEDA on queue length, the vLLM production-stack way (DESIGN.md section 5).

KEDA feeds `num_requests_waiting` summed over the role's pods to an HPA with an AverageValue
target: desired = ceil(total waiting / target per replica), unchanged while total / (target x
current) is within the tolerance of 1. At or below the activation threshold the pool is idle and
goes to its min. Pods without a sample are assumed to queue like the sampled ones, so a partial
scrape neither hides a queue nor invents one. The HPA underneath keeps its default behaviour
(300 s scale-down stabilisation, one scale-up per 15 s of at most max(4 pods, 100%)).

Queue length is blind to a pool that keeps up: with nothing waiting, it shrinks to min however
busy the instances are. That is the baseline's nature, and part of what the benchmark measures.
"""

from __future__ import annotations

from chiron_operator.control.baselines.common import (
    ceil_count,
    hold,
    hpa_scale_up_limit,
    mean,
    ready_count,
    single_signal_decide,
    usable_pods,
)
from chiron_operator.control.baselines.tuning import BaselineState, KedaTuning
from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PoolSnapshot, is_known

POLICY_NAME = "keda"


def keda_replicas(
    current: int, total_waiting: float, min_replicas: int, tuning: KedaTuning
) -> Verdict:
    """The replica count KEDA's HPA asks for, given the role's total queue."""
    target = tuning.target_waiting_per_replica
    queue = f"{total_waiting:.1f} waiting requests"
    if total_waiting <= tuning.activation_waiting_requests:
        why = f"{queue} <= activation {tuning.activation_waiting_requests:g}: idle"
        return Verdict(min_replicas, Reason.TARGET_TRACKING, f"{why}, go to min {min_replicas}")
    desired = ceil_count(total_waiting / target)
    if current > 0:
        ratio = total_waiting / (target * current)
        if abs(1.0 - ratio) <= tuning.tolerance_ratio:
            why = f"{queue} / ({target:g} x {current}) = {ratio:.2f}"
            return hold(current, Reason.WITHIN_TOLERANCE, f"{why}, within tolerance")
    message = f"ceil({queue} / {target:g} per replica) = {desired}"
    verdict = Verdict(desired, Reason.TARGET_TRACKING, message)
    return hpa_scale_up_limit(
        verdict, current, tuning.scale_up_limit_replicas, tuning.scale_up_limit_ratio
    )


def propose(snapshot: PoolSnapshot, role: Role, tuning: KedaTuning) -> tuple[Verdict, float]:
    """KEDA's proposal for one role, and the total queue it saw (NaN if none)."""
    role_snapshot = snapshot.role(role)
    current = role_snapshot.replicas
    pods = usable_pods(snapshot, role, tuning.guards.metrics_staleness_s)
    waiting = [p.waiting_requests for p in pods if is_known(p.waiting_requests)]
    if not waiting:
        why = "no ready pod reports a fresh queue length"
        return hold(current, Reason.METRICS_MISSING, why), mean(waiting)
    total = mean(waiting) * max(ready_count(role_snapshot), len(waiting))
    min_replicas = tuning.bounds[role].min_replicas
    return keda_replicas(current, total, min_replicas, tuning), total


decide = single_signal_decide("waiting_requests", propose)
"""One KEDA tick over every scaled role, behind the guard rails."""


def bound(tuning: KedaTuning | None = None) -> BoundPolicy[KedaTuning, BaselineState]:
    """The KEDA baseline with its tuning bound (defaults: 5 waiting per replica)."""
    return BoundPolicy(
        POLICY_NAME, KedaTuning() if tuning is None else tuning, decide, BaselineState()
    )
