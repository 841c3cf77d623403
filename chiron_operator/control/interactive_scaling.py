"""Interactive backpressure: add mixed instances above the IBP band, remove the rest below it.

IBP = busy / sampled interactive+mixed instances, `busy` summing each pod's interactive load
over its busy level (`busy_share`). Above the band, mixed instances are added to bring IBP to
the band's middle, net of capacity already starting; below it, the instances beyond what the
load needs at the middle go (interactive first), so the survivors' grown load cannot flap
straight back, and the guard rails' stabilisation window sets the pace of a falling day.
"""

from __future__ import annotations

import math

from chiron_operator.control.pool_view import (
    CEIL_EPS,
    allowed,
    batch_running,
    fresh_pods,
    hold_all,
    interactive_load,
    mean_itl_s,
    mixed_utilization,
)
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, is_known
from chiron_operator.core.tuning import PoolTuning, SloTargets

# A busy level of 0 would make every running request infinitely busy.
_MIN_BUSY_RATIO = 0.01


def busy_share(
    pod: PodSignals,
    busy_running_ratio: float,
    slo: SloTargets | None = None,
    itl_target_ratio: float = 1.0,
) -> float | None:
    """How many busy instances the pod's interactive load makes; None when it reports none.

    The pod's interactive requests over its busy level (`busy_running_ratio` of its cap): 1
    at the level, up to 1 / `busy_running_ratio` at the cap, and at least 1 while interactive
    requests wait at the pod. Backpressure is then the load over the busy level, not the share
    of pods past a line: counted 0 or 1, a 70B pool whose pods ran at half their caps read as
    0 of 5 busy and held while the load rose, and a pod at its cap weighed no more than one
    at the line (docs/BENCHMARKS.md has what each measured).

    A mixed pod whose load the source cannot split by class (real vLLM exports no per-priority
    gauges) is judged by its latency instead when `slo` is given: with priority scheduling its
    batch work yields to interactive requests, so a pod full of batch work is busy for
    interactive traffic only once interactive latency suffers.
    """
    if (
        slo is not None
        and pod.role is Role.MIXED
        and not is_known(pod.interactive_running_requests)
    ):
        breach = _latency_breach(pod, slo, itl_target_ratio)
        if breach is not None:
            return float(breach)
    running, waiting = interactive_load(pod)
    if not (is_known(running) or is_known(waiting)):
        return None
    ratio = max(busy_running_ratio, _MIN_BUSY_RATIO)
    share = 0.0
    if is_known(running):
        share = min(1.0 / ratio, running / (ratio * max(pod.max_num_seqs, 1)))
    if is_known(waiting) and waiting > 0:
        return max(1.0, share)
    return share


def _latency_breach(pod: PodSignals, slo: SloTargets, itl_target_ratio: float) -> bool | None:
    """Whether TTFT at the SLO percentile or the mean ITL misses its target; None when neither
    is known. ITL is the pod's mean gap (`mean_itl_s`) against the share of the SLO the local
    controller allows it (`itl_target_ratio`), the histogram's quantile against the SLO only
    when the pod runs nothing: the quantile is a prefill stall as soon as prompts arrive often.
    """
    itl, itl_target = mean_itl_s(pod), slo.interactive_itl_s * itl_target_ratio
    if not is_known(itl):
        itl, itl_target = pod.itl_s, slo.interactive_itl_s
    pairs = ((pod.ttft_s, slo.interactive_ttft_s), (itl, itl_target))
    known = [(observed, target) for observed, target in pairs if is_known(observed)]
    if not known:
        return None
    return any(observed > target for observed, target in known)


def interactive_backpressure_counts(
    snapshot: PoolSnapshot,
    busy_running_ratio: float,
    staleness_s: float,
    slo: SloTargets | None = None,
    itl_target_ratio: float = 1.0,
) -> tuple[float, int]:
    """(busy, sampled) over ready interactive and mixed pods with a fresh load sample: `busy`
    sums how busy each is (`busy_share`), in instances.

    While interactive requests overflow (see `interactive_overflow`), unsplit mixed pods are
    judged by their totals as well as their latency: the overflow queues where the mixed pods
    cannot see it, so their latency stays fine however short interactive capacity is.
    """
    interactive = fresh_pods(snapshot, Role.INTERACTIVE, staleness_s)
    mixed = fresh_pods(snapshot, Role.MIXED, staleness_s)
    overflow = interactive_overflow(interactive)
    flags: list[float | None] = [
        busy_share(p, busy_running_ratio, slo, itl_target_ratio) for p in interactive
    ]
    for pod in mixed:
        by_latency = busy_share(pod, busy_running_ratio, slo, itl_target_ratio)
        if overflow:
            # The overflow only adds evidence of busyness: a pod whose latency already misses
            # stays busy, so more load never reads as less backpressure.
            by_totals = busy_share(pod, busy_running_ratio, None, itl_target_ratio)
            found = [f for f in (by_latency, by_totals) if f is not None]
            by_latency = max(found) if found else None
        flags.append(by_latency)
    known = [f for f in flags if f is not None]
    return sum(known), len(known)


def interactive_overflow(interactive_pods: list[PodSignals]) -> bool:
    """Whether interactive requests queue beyond an interactive pod's batch size.

    Requests go to an interactive pod while it has room and overflow to mixed pods after that;
    a queue longer than the pod's free slots means the mixed pods took no more either, i.e.
    interactive work fills them whatever their latency says. (With plain Service routing the
    same queue forms on the mixed pods too, and their latency shows it.)
    """
    return any(
        is_known(p.running_requests)
        and is_known(p.waiting_requests)
        and p.running_requests + p.waiting_requests > max(p.max_num_seqs, 1)
        for p in interactive_pods
    )


def decide_interactive(
    snapshot: PoolSnapshot, tuning: PoolTuning, busy: float, sampled: int
) -> dict[Role, Verdict]:
    """IBP band rule over the interactive and mixed roles the bounds allow."""
    roles = [r for r in (Role.INTERACTIVE, Role.MIXED) if allowed(tuning, r)]
    if not roles:
        return {}
    if sampled == 0:
        why = "no ready interactive or mixed pod has a fresh load sample"
        return hold_all(snapshot, roles, Reason.METRICS_MISSING, why)
    knobs = tuning.global_scaling
    ibp = busy / sampled
    summary = f"interactive backpressure {ibp:.2f}"
    counts = f"({busy:.1f} of {sampled} instances busy)"
    if ibp > knobs.ibp_high_ratio:
        why = f"{summary} > {knobs.ibp_high_ratio:.2f} {counts}"
        return _scale_out_interactive(snapshot, tuning, roles, busy, sampled, why=why)
    if ibp < knobs.ibp_low_ratio:
        why = f"{summary} < {knobs.ibp_low_ratio:.2f} {counts}"
        return _scale_in_interactive(snapshot, tuning, roles, busy, sampled, why=why)
    why = f"{summary} in [{knobs.ibp_low_ratio:.2f}, {knobs.ibp_high_ratio:.2f}] {counts}"
    return hold_all(snapshot, roles, Reason.INTERACTIVE_BACKPRESSURE_IN_BAND, why)


def _scale_out_interactive(
    snapshot: PoolSnapshot,
    tuning: PoolTuning,
    roles: list[Role],
    busy: float,
    sampled: int,
    *,
    why: str,
) -> dict[Role, Verdict]:
    """Add mixed instances (interactive if mixed is not allowed), net of capacity on its way.

    Only the mixed role grows, as in the paper: once it is at its max, the guard rails clamp
    the proposal and the interactive role's own max is not used. Letting the excess overflow
    to interactive was measured (docs/BENCHMARKS.md): it buys little attainment where the
    mixed max binds during a batch backlog, at a large GPU cost, so the paper's rule stays.
    """
    knobs = tuning.global_scaling
    # Mixed instances keep the new headroom useful: batch fills it until interactive needs it.
    role = Role.MIXED if Role.MIXED in roles else Role.INTERACTIVE
    mid = (knobs.ibp_low_ratio + knobs.ibp_high_ratio) / 2
    wanted = _instances_to_add(busy, sampled, mid)
    # Pods already requested but not sampled yet (starting, or not yet scheduled) are capacity
    # on its way: without netting them out, every tick of a cold start would add again.
    pending = sum(snapshot.role(r).replicas for r in roles) - sampled
    add = wanted - max(0, pending)
    if add <= 0:
        message = f"{why}: {pending} instance(s) already starting cover the {wanted} needed"
        return hold_all(snapshot, roles, Reason.PENDING_CAPACITY, message)
    verdicts = hold_all(snapshot, roles, Reason.INTERACTIVE_BACKPRESSURE_HIGH, why)
    current = snapshot.role(role).replicas
    message = f"{why}: add {add} {role.value} (to reach {mid:.2f})"
    verdicts[role] = Verdict(current + add, Reason.INTERACTIVE_BACKPRESSURE_HIGH, message)
    return verdicts


def _instances_to_add(busy: float, sampled: int, target_ratio: float) -> int:
    """Instances that bring busy/total down to the target if busy load spreads evenly."""
    if target_ratio <= 0:
        return 1
    return max(1, math.ceil(busy / target_ratio - sampled - CEIL_EPS))


def _scale_in_interactive(
    snapshot: PoolSnapshot,
    tuning: PoolTuning,
    roles: list[Role],
    busy: float,
    sampled: int,
    *,
    why: str,
) -> dict[Role, Verdict]:
    """Remove the instances the load does not need: interactive ones first, then mixed.

    The load of the sampled instances (`busy`, in busy instances) spread over fewer of them
    keeps backpressure at the band's middle with ceil(busy / middle) instances; the rest can
    go. Proposing that count, not one fewer, lets the guard rails' stabilisation window follow
    a falling day: the pool scales to the highest count of the window, where one fewer per
    tick took a window per instance (12 instances idled for 40 minutes after a backlog).
    """
    reason = Reason.INTERACTIVE_BACKPRESSURE_LOW
    knobs = tuning.global_scaling
    mid = (knobs.ibp_low_ratio + knobs.ibp_high_ratio) / 2
    needed = max(1, math.ceil(busy / mid - CEIL_EPS)) if mid > 0 else sampled
    surplus = sampled - needed
    if surplus <= 0:
        # The freed load would spread over the rest and make them busy: it would flap back.
        return hold_all(snapshot, roles, reason, f"{why}, but all {sampled} are needed")
    verdicts = hold_all(snapshot, roles, reason, why)
    removals = _removals(snapshot, tuning, roles, surplus)
    if not removals:
        return hold_all(
            snapshot, roles, reason, f"{why}; {_why_none_can_go(snapshot, tuning, roles)}"
        )
    for role, count in removals.items():
        current = snapshot.role(role).replicas
        message = (
            f"{why}: {needed} instance(s) carry the load at {mid:.2f}; remove {count} {role.value}"
        )
        verdicts[role] = Verdict(current - count, reason, message)
    return verdicts


def _removals(
    snapshot: PoolSnapshot, tuning: PoolTuning, roles: list[Role], surplus: int
) -> dict[Role, int]:
    """How many of `surplus` instances each role gives up: interactive down to its min first."""
    out: dict[Role, int] = {}
    for role in (Role.INTERACTIVE, Role.MIXED):
        if surplus <= 0 or role not in roles:
            continue
        if role is Role.MIXED and _batch_needs_mixed(snapshot, tuning):
            continue
        spare = snapshot.role(role).replicas - tuning.role_bounds(role).min_replicas
        take = min(spare, surplus)
        if take > 0:
            out[role] = take
            surplus -= take
    return out


def _why_none_can_go(snapshot: PoolSnapshot, tuning: PoolTuning, roles: list[Role]) -> str:
    """Why `_removals` found no instance to remove (asked only when it found none)."""
    mixed = snapshot.role(Role.MIXED).replicas
    if Role.MIXED in roles and mixed > tuning.role_bounds(Role.MIXED).min_replicas:
        return "interactive at its min, and mixed carry batch work no batch instance takes"
    return "interactive and mixed at their min"


def _batch_needs_mixed(snapshot: PoolSnapshot, tuning: PoolTuning) -> bool:
    """Whether removing a mixed instance could strand batch work.

    Batch work has somewhere else to go when a batch instance is ready (the batch rule then
    sizes the batch role for it). Otherwise any batch work counts: queued requests, or batch
    requests running on mixed pods. What cannot be seen (a stale queue, a mixed pod not
    reported) is assumed to be batch work. A mixed pod whose load is not split by class (real
    vLLM) counts as carrying batch work only while the mixed pods are full by the batch rule's
    measure (utilisation at or above 1 - `mixed_idle_ratio`): batch work fills every free
    mixed slot while any waits, so mixed pods with idle room have no backlog behind them, and
    the few batch requests a removed pod re-queues fit in the others' idle room.
    """
    staleness_s = tuning.guards.metrics_staleness_s
    if snapshot.role(Role.BATCH).ready_replicas > 0:
        return False
    queue = snapshot.batch_queue
    if queue.sample_age_s > staleness_s or queue.queued_requests > 0:
        return True
    mixed = snapshot.role(Role.MIXED)
    fresh = fresh_pods(snapshot, Role.MIXED, staleness_s)
    if len(fresh) < mixed.ready_replicas:
        return True
    running = [batch_running(p) for p in fresh]
    if any(is_known(r) and r > 0.0 for r in running):
        return True
    if all(is_known(r) for r in running):
        return False
    utilization = mixed_utilization(snapshot, staleness_s)
    return not utilization < 1.0 - tuning.global_scaling.mixed_idle_ratio  # NaN: assume work
