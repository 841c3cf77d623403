"""Llumnix's instance auto-scaling on KV-cache freeness (DESIGN.md section 5).

Freeness is Llumnix's `remaining_steps` load, aggregated over the role's instances: free KV
blocks per running-or-waiting request, where an instance's free blocks are
(1 - kv_cache_usage) x `kv_capacity_blocks` (vLLM exports usage, not blocks). Every
`scaling_interval_s` (10 s):

  - freeness below `scale_up_freeness_blocks` (10): add one instance;
  - else, freeness the role would keep without one instance's blocks above
    `scale_down_freeness_blocks` (60): remove one (Llumnix's avg_load scale-down metric, which
    looks ahead so a removal cannot push the role straight back under the low threshold);
  - else hold.

As in Llumnix, nothing is decided unless every instance reports: a starting instance or a ready
one without a sample holds the role. An idle role (no request) reads as infinitely free and
shrinks one instance per interval down to its min. The untuned baseline uses Llumnix's default
thresholds; `bound_tuned` is the same policy with thresholds picked per workload by a sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chiron_operator.control.baselines.common import (
    decide_per_role,
    hold,
    ready_count,
    unready_count,
    usable_pods,
)
from chiron_operator.control.baselines.tuning import LlumnixState, LlumnixTuning
from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.decision import PoolDecision, Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, is_known

POLICY_NAME = "llumnix"
TUNED_POLICY_NAME = "llumnix-tuned"


@dataclass(frozen=True, slots=True)
class Freeness:
    """A role's aggregate KV freeness now and without one instance, in blocks per request."""

    free_blocks: float
    requests: float
    now_blocks_per_request: float
    without_one_blocks_per_request: float


def freeness(pods: list[PodSignals], capacity_blocks: int) -> Freeness:
    """Aggregate freeness of fully sampled pods; infinite when no request is in flight."""
    free = math.fsum((1.0 - min(max(p.kv_cache_usage_ratio, 0.0), 1.0)) for p in pods)
    free_blocks = free * capacity_blocks
    requests = math.fsum(p.running_requests + p.waiting_requests for p in pods)
    if requests <= 0:
        return Freeness(free_blocks, 0.0, math.inf, math.inf)
    without_one = max(0.0, free_blocks - capacity_blocks)
    return Freeness(free_blocks, requests, free_blocks / requests, without_one / requests)


def _sampled(pod: PodSignals) -> bool:
    signals = (pod.kv_cache_usage_ratio, pod.running_requests, pod.waiting_requests)
    return all(is_known(s) for s in signals)


def propose(
    snapshot: PoolSnapshot, role: Role, tuning: LlumnixTuning
) -> tuple[Verdict, Freeness | None]:
    """Llumnix's proposal for one role at a check, and the freeness it saw (None if unseen)."""
    role_snapshot = snapshot.role(role)
    current = role_snapshot.replicas
    unready = unready_count(role_snapshot)
    if unready:
        why = f"{unready} instance(s) not ready: Llumnix scales once every instance reports"
        return hold(current, Reason.PENDING_CAPACITY, why), None
    pods = [
        p for p in usable_pods(snapshot, role, tuning.guards.metrics_staleness_s) if _sampled(p)
    ]
    ready = ready_count(role_snapshot)
    if not pods or len(pods) < ready:
        why = f"{len(pods)} of {ready} ready instance(s) report KV usage and requests"
        return hold(current, Reason.METRICS_MISSING, why), None
    seen = freeness(pods, tuning.kv_capacity_blocks)
    return _threshold(current, seen, tuning), seen


def _threshold(current: int, seen: Freeness, tuning: LlumnixTuning) -> Verdict:
    low, high = tuning.scale_up_freeness_blocks, tuning.scale_down_freeness_blocks
    now, without = seen.now_blocks_per_request, seen.without_one_blocks_per_request
    detail = (
        f"freeness {now:.1f} blocks/request ({seen.free_blocks:.0f} free blocks, "
        f"{seen.requests:.0f} requests), {without:.1f} without one instance"
    )
    if now < low:
        return Verdict(current + 1, Reason.FREENESS_LOW, f"{detail} < {low:g}: add 1")
    if without > high:
        return Verdict(current - 1, Reason.FREENESS_HIGH, f"{detail} > {high:g}: remove 1")
    return hold(current, Reason.FREENESS_IN_BAND, f"{detail} in [{low:g}, {high:g}]")


def _check_due(now_s: float, last_s: float | None, interval_s: float) -> bool:
    # A last check in the future belongs to another clock (a restarted run): check now.
    return last_s is None or not 0.0 <= now_s - last_s < interval_s


def decide(
    snapshot: PoolSnapshot, tuning: LlumnixTuning, state: LlumnixState
) -> tuple[PoolDecision, LlumnixState]:
    """One tick: a freeness check per scaled role when the interval has passed, else hold."""
    now_s = snapshot.now_s
    due = _check_due(now_s, state.last_check_s, tuning.scaling_interval_s)

    def one_role(role: Role) -> tuple[Verdict, dict[str, float]]:
        if not due:
            last = state.last_check_s or 0.0
            why = f"next freeness check {last + tuning.scaling_interval_s - now_s:.0f} s away"
            return hold(snapshot.role(role).replicas, Reason.NO_CHANGE, why), {}
        verdict, seen = propose(snapshot, role, tuning)
        if seen is None:
            return verdict, {}
        return verdict, {
            f"{role.value}_free_kv_blocks": seen.free_blocks,
            f"{role.value}_requests": seen.requests,
        }

    decision, guards = decide_per_role(snapshot, tuning, state.guards, one_role)
    return decision, LlumnixState(guards, now_s if due else state.last_check_s)


def bound(tuning: LlumnixTuning | None = None) -> BoundPolicy[LlumnixTuning, LlumnixState]:
    """Untuned Llumnix: its default thresholds (up below 10, down above 60, every 10 s)."""
    chosen = LlumnixTuning() if tuning is None else tuning
    return BoundPolicy(POLICY_NAME, chosen, decide, LlumnixState())


def bound_tuned(
    scale_up_freeness_blocks: float,
    scale_down_freeness_blocks: float,
    tuning: LlumnixTuning | None = None,
) -> BoundPolicy[LlumnixTuning, LlumnixState]:
    """Tuned Llumnix: the same policy with thresholds chosen per workload (by a sweep)."""
    base = LlumnixTuning() if tuning is None else tuning
    tuned = LlumnixTuning(
        bounds=base.bounds,
        guards=base.guards,
        scale_up_freeness_blocks=scale_up_freeness_blocks,
        scale_down_freeness_blocks=scale_down_freeness_blocks,
        scaling_interval_s=base.scaling_interval_s,
        kv_capacity_blocks=base.kv_capacity_blocks,
    )
    return BoundPolicy(TUNED_POLICY_NAME, tuned, decide, LlumnixState())
