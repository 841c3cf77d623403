"""Kubernetes HPA on vLLM KV-cache utilisation (DESIGN.md section 5).

desired = ceil(ready x mean KV usage / target), unchanged while usage/target is within the
tolerance (10%) of 1. Pods without a sample are handled the HPA way, conservatively: on a
scale-down they count as exactly at target, on a scale-up as idle, and while pods are starting
a scale-up counts them as idle too; if that fill-in flips or cancels the direction, nothing
changes. HPA's default behaviour comes from the tuning: the guards stabilise scale-down over
300 s and allow one scale-up per 15 s, whose size this policy caps at max(4 pods, 100%).
"""

from __future__ import annotations

from chiron_operator.control.baselines.common import (
    ceil_count,
    hold,
    hpa_scale_up_limit,
    mean,
    ready_count,
    single_signal_decide,
    unready_count,
    usable_pods,
)
from chiron_operator.control.baselines.tuning import BaselineState, HpaTuning
from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PoolSnapshot, is_known

POLICY_NAME = "hpa"


def hpa_replicas(
    current: int,
    usages: list[float],
    missing: int,
    unready: int,
    *,
    target: float,
    tolerance: float,
) -> tuple[int, Reason, str]:
    """HPA's replica count from per-pod usages (same unit as `target`), with its fill-ins.

    `usages` are the measured ready pods'; `missing` ready pods have no sample; `unready` pods
    are starting. Mirrors the Kubernetes replica calculator for a per-pod metric.
    """
    ratio = mean(usages) / target
    if missing == 0 and (unready == 0 or ratio <= 1.0):
        return _plain(current, ratio, len(usages), tolerance)
    filled = usages + [target if ratio < 1.0 else 0.0] * missing
    if unready and ratio > 1.0:
        filled += [0.0] * unready
    filled_ratio = mean(filled) / target
    detail = f"usage/target {ratio:.2f}, {filled_ratio:.2f} counting {len(filled)} pods"
    flipped = (ratio < 1.0 < filled_ratio) or (ratio > 1.0 > filled_ratio)
    if flipped or abs(1.0 - filled_ratio) <= tolerance:
        return current, Reason.WITHIN_TOLERANCE, f"{detail}: unsampled pods cancel the change"
    desired = ceil_count(filled_ratio * len(filled))
    if (filled_ratio < 1.0 and desired > current) or (filled_ratio > 1.0 and desired < current):
        return current, Reason.WITHIN_TOLERANCE, f"{detail}: {desired} would reverse direction"
    return desired, Reason.TARGET_TRACKING, f"{detail}: {desired} replicas"


def _plain(current: int, ratio: float, pods: int, tolerance: float) -> tuple[int, Reason, str]:
    detail = f"usage/target {ratio:.2f} over {pods} ready pods"
    if abs(1.0 - ratio) <= tolerance:
        return current, Reason.WITHIN_TOLERANCE, f"{detail}, within {tolerance:.0%} of 1"
    desired = ceil_count(ratio * pods)
    return desired, Reason.TARGET_TRACKING, f"{detail}: ceil({ratio:.2f} x {pods}) = {desired}"


def propose(snapshot: PoolSnapshot, role: Role, tuning: HpaTuning) -> tuple[Verdict, float]:
    """The HPA's proposal for one role, and the mean KV usage it saw (NaN if none)."""
    role_snapshot = snapshot.role(role)
    current = role_snapshot.replicas
    pods = usable_pods(snapshot, role, tuning.guards.metrics_staleness_s)
    usages = [p.kv_cache_usage_ratio for p in pods if is_known(p.kv_cache_usage_ratio)]
    usage = mean(usages)
    if current == 0:
        return hold(0, Reason.TARGET_TRACKING, "HPA does not scale from zero replicas"), usage
    if not usages:
        why = "no ready pod reports a fresh KV-cache usage"
        return hold(current, Reason.METRICS_MISSING, why), usage
    desired, reason, detail = hpa_replicas(
        current,
        usages,
        ready_count(role_snapshot) - len(usages),
        unready_count(role_snapshot),
        target=tuning.target_kv_usage_ratio,
        tolerance=tuning.tolerance_ratio,
    )
    message = f"KV usage {usage:.0%} vs target {tuning.target_kv_usage_ratio:.0%}: {detail}"
    limited = hpa_scale_up_limit(
        Verdict(desired, reason, message),
        current,
        tuning.scale_up_limit_replicas,
        tuning.scale_up_limit_ratio,
    )
    return limited, usage


decide = single_signal_decide("kv_usage_ratio", propose)
"""One HPA tick over every scaled role, behind the guard rails."""


def bound(tuning: HpaTuning | None = None) -> BoundPolicy[HpaTuning, BaselineState]:
    """The HPA baseline with its tuning bound (defaults: target 70%, HPA behaviour)."""
    return BoundPolicy(
        POLICY_NAME, HpaTuning() if tuning is None else tuning, decide, BaselineState()
    )
