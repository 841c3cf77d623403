"""Knative / AIBrix KPA on concurrency, with its panic mode (DESIGN.md section 5).

Observed concurrency is the role's in-flight requests (running + waiting), extrapolated from the
sampled ready pods to all ready pods as Knative's collector does. Each tick appends a sample to
a window kept in the state; the stable (60 s) and panic (6 s) averages give

    desired_stable = ceil(stable / target),  desired_panic = ceil(panic / target),

both kept within [ready / max_scale_down_rate, ready x max_scale_up_rate]. Panic starts when
ceil(panic / target) reaches `panic_threshold` (200%) x ready instances, is renewed while it
stays there, and ends a stable window after the last crossing. In panic the count only grows:
the highest desired count seen in the panic, never below the current size.
"""

from __future__ import annotations

import math

from chiron_operator.control.baselines.common import (
    ceil_count,
    decide_per_role,
    hold,
    mean,
    ready_count,
    usable_pods,
)
from chiron_operator.control.baselines.tuning import KpaRoleState, KpaState, KpaTuning
from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.decision import PoolDecision, Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PoolSnapshot, is_known

POLICY_NAME = "kpa"

Samples = tuple[tuple[float, float], ...]


def observed_concurrency(snapshot: PoolSnapshot, role: Role, staleness_s: float) -> float:
    """In-flight requests of the role's ready pods; NaN when none has a usable sample."""
    pods = usable_pods(snapshot, role, staleness_s)
    loads = [
        p.running_requests + p.waiting_requests
        for p in pods
        if is_known(p.running_requests) and is_known(p.waiting_requests)
    ]
    if not loads:
        return math.nan
    return mean(loads) * max(ready_count(snapshot.role(role)), len(loads))


def window_mean(samples: Samples, now_s: float, window_s: float) -> float:
    """Mean of the samples taken within `window_s` before `now_s` (NaN if none)."""
    return mean([v for t, v in samples if now_s - window_s < t <= now_s])


def kpa_step(
    now_s: float, current: int, ready: int, tuning: KpaTuning, state: KpaRoleState
) -> tuple[Verdict, KpaRoleState]:
    """Stable/panic decision from the window already holding this tick's sample."""
    target = tuning.target_concurrency_per_replica
    stable = window_mean(state.samples, now_s, tuning.stable_window_s)
    panic = window_mean(state.samples, now_s, tuning.panic_window_s)
    pods = max(1, ready)
    low = math.floor(pods / tuning.max_scale_down_rate_ratio)
    high = math.ceil(pods * tuning.max_scale_up_rate_ratio)
    desired_stable = min(max(ceil_count(stable / target), low), high)
    desired_panic = min(max(ceil_count(panic / target), low), high)
    over = ceil_count(panic / target) / pods >= tuning.panic_threshold_ratio
    since = now_s if over else state.panic_since_s
    if since is not None and now_s - since > tuning.stable_window_s:
        since = None
    detail = (
        f"concurrency {stable:.1f} stable / {panic:.1f} panic vs {target:g} per replica "
        f"over {pods} ready"
    )
    if since is None:
        message = f"{detail}: {desired_stable} replicas"
        new_state = KpaRoleState(state.samples, None, 0)
        return Verdict(desired_stable, Reason.TARGET_TRACKING, message), new_state
    peak = max(state.max_panic_replicas, desired_stable, desired_panic)
    value = max(peak, current)
    message = f"{detail}: panic since {since:.0f} s, {value} replicas (no scale-down in panic)"
    return Verdict(value, Reason.PANIC_MODE, message), KpaRoleState(state.samples, since, peak)


def propose(
    snapshot: PoolSnapshot, role: Role, tuning: KpaTuning, state: KpaRoleState
) -> tuple[Verdict, KpaRoleState, float]:
    """KPA's proposal for one role, its new memory and the concurrency it observed."""
    now_s = snapshot.now_s
    role_snapshot = snapshot.role(role)
    current = role_snapshot.replicas
    observed = observed_concurrency(snapshot, role, tuning.guards.metrics_staleness_s)
    kept = tuple((t, v) for t, v in state.samples if now_s - tuning.stable_window_s < t < now_s)
    if not is_known(observed):
        why = "no ready pod reports fresh running/waiting requests"
        held = KpaRoleState(kept, state.panic_since_s, state.max_panic_replicas)
        return hold(current, Reason.METRICS_MISSING, why), held, observed
    windowed = KpaRoleState(
        (*kept, (now_s, observed)), state.panic_since_s, state.max_panic_replicas
    )
    verdict, new_state = kpa_step(now_s, current, ready_count(role_snapshot), tuning, windowed)
    return verdict, new_state, observed


def decide(
    snapshot: PoolSnapshot, tuning: KpaTuning, state: KpaState
) -> tuple[PoolDecision, KpaState]:
    """One KPA tick over every scaled role, behind the guard rails."""
    role_states = dict(state.roles)

    def one_role(role: Role) -> tuple[Verdict, dict[str, float]]:
        previous = role_states.get(role, KpaRoleState())
        verdict, role_states[role], observed = propose(snapshot, role, tuning, previous)
        return verdict, {f"{role.value}_concurrency_requests": observed}

    decision, guards = decide_per_role(snapshot, tuning, state.guards, one_role)
    return decision, KpaState(guards, role_states)


def bound(tuning: KpaTuning | None = None) -> BoundPolicy[KpaTuning, KpaState]:
    """The KPA baseline with its tuning bound (defaults: 60 s stable, 6 s panic, 200%)."""
    return BoundPolicy(POLICY_NAME, KpaTuning() if tuning is None else tuning, decide, KpaState())
