"""Chiron's local autoscaler: the batch size (vLLM --max-num-seqs) one role should run.

Backpressure BP = max(LBP, TBP). LBP = EWMA(ITL) / (ITL SLO x `itl_target_ratio`) says how close
the role is to its latency objective, ITL being the pods' mean gap between a sequence's tokens
(running sequences over tokens per second, both averaged over the same window, see
`pool_view.mean_itl_s`): the per-request mean ITL the SLO is checked on averages exactly that,
stalls included. TBP = throughput before the last increase / throughput now says whether the
last increase cost throughput. BP >= 1 shrinks the batch multiplicatively; BP < 1 grows it, by
more the further BP is from 1, but only while the batch is actually full (`backpressure`).

Every step is taken from `applied_seqs`, the size the pods ran while the signals were measured,
not from the last target: the target may be waiting for a restart (the slow path is
rate-limited), and compounding steps the pods never ran would walk the target to a bound on no
evidence. When the two agree (the usual case, and always once a restart lands) this is exactly
the paper's "step from the current batch size".

On the fast path (a `SignalClock` given, see `fast_path`) a change applies at once, and the
signals lag it: the EWMA and the rate windows still hold the old size for a while. A move the
same way as the last change then waits until its signal was measured wholly at the new size
(the settle) and the ITL EWMA restarted from the first such sample agrees; TBP is judged only
on a rate measured wholly after the increase, against a baseline measured wholly before it. A
move the other way needs no wait: the lag can only understate the case for it. And since the
gateway, not vLLM, queues what the cap keeps out, a batch is full when the pods hold (run or
queue) nearly the cap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from chiron_operator.control.backpressure import (
    Backpressure,
    LocalSignals,
    backpressure,
    decrease,
    hold_unsaturated,
    increase,
    shrink,
)
from chiron_operator.control.fast_path import (
    Coverage,
    SignalClock,
    coverage,
    straddled_itl_emergency,
)
from chiron_operator.control.pool_view import mean_itl_s
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason
from chiron_operator.core.snapshot import NAN, PodSignals, RoleSnapshot, is_known
from chiron_operator.core.state import LocalState
from chiron_operator.core.tuning import LocalTuning, RoleBounds

__all__ = ["LocalSignals", "decide_local", "local_signals"]


def local_signals(role: RoleSnapshot, staleness_s: float) -> LocalSignals:
    """Aggregate a role's pods into the signals `decide_local` reads.

    A pod counts when it is ready, its sample is at most `staleness_s` old and it reports its
    running-requests gauge. ITL and throughput may still be NaN on such a pod (an idle pod
    generated no tokens in the window); they are aggregated over the pods that have them.
    """
    fresh = tuple(p for p in role.pods if _is_fresh(p, staleness_s))
    itls = [v for v in (mean_itl_s(p) for p in fresh) if is_known(v)]
    if not itls:  # nothing running with a measured rate: the histogram's quantile, if any
        itls = [p.itl_s for p in fresh if is_known(p.itl_s)]
    return LocalSignals(
        itl_s=max(itls) if itls else NAN,
        generation_tokens_per_s=_mean_known(p.generation_tokens_per_s for p in fresh),
        running_requests=_mean_known(p.running_requests for p in fresh),
        waiting_requests=_mean_known(p.waiting_requests for p in fresh),
        fresh_pods=len(fresh),
        sample_age_s=max((p.sample_age_s for p in fresh), default=math.inf),
        peak_running_requests=max((p.running_requests for p in fresh), default=NAN),
    )


def _is_fresh(pod: PodSignals, staleness_s: float) -> bool:
    return pod.ready and pod.sample_age_s <= staleness_s and is_known(pod.running_requests)


def _mean_known(values: Iterable[float]) -> float:
    known = [v for v in values if is_known(v)]
    return sum(known) / len(known) if known else NAN


@dataclass(frozen=True, slots=True)
class _Tick:
    """One decision's inputs: the signals, the size they were measured at, and the memory."""

    signals: LocalSignals
    measured: int
    saturated: bool
    itl_target_s: float | None
    tuning: LocalTuning
    state: LocalState
    gateway: bool

    def pressure(
        self, itl_s: float | None, *, judge_throughput: bool, label: str = "ITL EWMA"
    ) -> Backpressure:
        before = self.state.throughput_before_increase_tokens_per_s
        now = self.signals.generation_tokens_per_s
        target_s = self.itl_target_s
        return backpressure(itl_s, target_s, before, now, self.tuning, judge_throughput, label)


def decide_local(  # noqa: PLR0917 -- the composed policy's contract is positional
    signals: LocalSignals,
    applied_seqs: int,
    itl_slo_s: float | None,
    bounds: RoleBounds,
    tuning: LocalTuning,
    state: LocalState,
    clock: SignalClock | None = None,
) -> tuple[Verdict, LocalState]:
    """The batch size (--max-num-seqs) a role should run, and the controller's new memory.

    `applied_seqs` is the cap the pods run now; `itl_slo_s` is None for roles without an ITL
    objective (batch), which then follow throughput backpressure only. On missing data the last
    target holds (clamped to the bounds) and the state is returned unchanged. `clock` is given
    on the fast path only (changes apply at once), and brings the settle rule with it.
    """
    current = state.target_max_num_seqs if state.target_max_num_seqs is not None else applied_seqs
    missing = _missing_cause(signals, itl_slo_s)
    if missing is not None:
        held = _clamp(current, bounds)
        return Verdict(held, Reason.METRICS_MISSING, f"{missing}: hold {held}"), state
    measured = max(applied_seqs, 1)
    target_s = None if itl_slo_s is None else itl_slo_s * tuning.itl_target_ratio
    gateway = clock is not None
    saturated = _is_saturated(signals, measured, tuning, gateway=gateway)
    tick = _Tick(signals, measured, saturated, target_s, tuning, state, gateway)
    ewma = _ewma(state.ewma_itl_s, signals.itl_s, tuning.itl_ewma_weight_ratio)
    # TBP needs the new size to have run (no increase waiting for its restart) and a full
    # batch: an unsaturated role's throughput measures its demand, not what the size allows.
    judge_throughput = saturated and current <= measured
    if clock is None:
        proposal = _propose(tick, tick.pressure(ewma, judge_throughput=judge_throughput))
        verdict = _clamp_verdict(proposal, bounds)
        return verdict, _remember(tick, ewma, verdict.value, baseline_known=True)
    return _decide_fast(tick, ewma, bounds, clock, judge_throughput=judge_throughput)


def _decide_fast(
    tick: _Tick,
    ewma: float | None,
    bounds: RoleBounds,
    clock: SignalClock,
    *,
    judge_throughput: bool,
) -> tuple[Verdict, LocalState]:
    """`decide_local` when changes apply at once: the settle rule over the paper's steps."""
    signals, state = tick.signals, tick.state
    sample = (signals.sample_age_s, signals.peak_running_requests)
    cover = coverage(clock, state, tick.measured, sample)
    # The EWMA of samples measured wholly at the new size: restarted by the first of them.
    weight = tick.tuning.itl_ewma_weight_ratio
    settled = _ewma(state.settled_ewma_itl_s, signals.itl_s, weight) if cover.itl else None
    judge = judge_throughput and cover.rate
    smooth = tick.pressure(ewma, judge_throughput=judge)
    proposal = _propose(tick, smooth)
    move = (proposal.value > tick.measured) - (proposal.value < tick.measured)
    if move != 0 and move == cover.direction:
        proposal = _confirm(tick, cover, proposal, settled, judge_throughput=judge)
    verdict = _clamp_verdict(proposal, bounds)
    remembered = _remember(tick, ewma, verdict.value, baseline_known=cover.rate)
    remembered = replace(remembered, settled_ewma_itl_s=settled)
    return verdict, _stamp(remembered, cover, clock, tick.measured)


def _propose(tick: _Tick, pressure: Backpressure) -> Verdict:
    """The paper's step: shrink on BP >= 1, grow a full batch on BP < 1, else hold."""
    if pressure.value >= 1.0:
        return shrink(pressure, tick.signals, tick.measured, tick.tuning)
    if tick.saturated:
        return increase(pressure, tick.signals, tick.measured, tick.tuning)
    return hold_unsaturated(pressure, tick.signals, tick.measured, tick.tuning, tick.gateway)


def _confirm(
    tick: _Tick,
    cover: Coverage,
    proposal: Verdict,
    settled: float | None,
    *,
    judge_throughput: bool,
) -> Verdict:
    """`proposal`, a move the same way as the last change, if the new size alone calls for it.

    Until the signals it reads cover the new size it waits, unless an ITL sample proves even
    the new size over target (`straddled_itl_emergency`). Then the EWMA restarted at the new
    size must agree: a lone sample can hold a move the smoothed EWMA proposes, never start one.
    """
    measured, shrinking = tick.measured, proposal.value < tick.measured
    waiting = cover.lagging(reads_itl=tick.itl_target_s is not None)
    if waiting is not None:
        emergency = _emergency(tick) if shrinking else None
        if emergency is not None:
            return Verdict(
                proposal.value, proposal.reason, f"{proposal.message} at once: {emergency}"
            )
        return proposal.but(measured, Reason.BATCH_SIZE_SETTLING, f"{waiting}: hold {measured}")
    label = f"ITL EWMA at {measured} alone"
    clean = tick.pressure(settled, judge_throughput=judge_throughput, label=label)
    if shrinking and clean.value >= 1.0:
        # `_propose` already found this decrease binding (same peak, same size).
        return decrease(clean, measured, tick.tuning)
    if not shrinking and clean.value < 1.0:
        return increase(clean, tick.signals, measured, tick.tuning)
    message = (
        f"settling: {clean.describe()}, while the EWMA still carries the sizes before "
        f"{cover.changed}: hold {measured}"
    )
    return proposal.but(measured, Reason.BATCH_SIZE_SETTLING, message)


def _emergency(tick: _Tick) -> str | None:
    if tick.itl_target_s is None:
        return None
    factor = tick.tuning.decrease_factor_ratio
    return straddled_itl_emergency(tick.signals.itl_s, tick.itl_target_s, factor)


def _missing_cause(signals: LocalSignals, itl_slo_s: float | None) -> str | None:
    """Why the signals cannot support a decision, or None when they can."""
    if signals.fresh_pods == 0:
        return "no ready pod reported fresh metrics"
    if itl_slo_s is not None and not is_known(signals.itl_s):
        return f"ITL not observed on {signals.fresh_pods} fresh pods"
    if itl_slo_s is None and not is_known(signals.generation_tokens_per_s):
        return f"generation throughput not observed on {signals.fresh_pods} fresh pods"
    return None


def _is_saturated(
    signals: LocalSignals, measured: int, tuning: LocalTuning, *, gateway: bool
) -> bool:
    """Whether the batch size is what limits the pods: the batch is full.

    Without a gateway vLLM queues what --max-num-seqs keeps out, so a queue at the pods says
    the cap binds. With one, the gateway admits at most the cap per pod (running and waiting
    together) and queues the rest itself; a pod's own queue then holds requests the cap has
    already admitted, waiting for prefill budget or KV blocks, which a larger cap would only
    lengthen. Counted as full, it grew an interactive role from 41 to 108 sequences while its
    pods ran 30 of 41, and the pool scaled in under batches near the ITL target (simulated
    attainment 0.985 -> 0.996 without it on conv-batch-deadline, 0.984 -> 0.999 on
    conv-interactive). So the pod's queue counts only up to the share of the cap a full batch
    may leave unrun (1 - `saturation_ratio`): requests between admission and their first
    step. Counted whole, it grew a 70B batch pod's cap to 864 while the pod ran 179 (KV
    bound) and held 677 in its own queue, out of the batch rule's sight and out of reach of
    twelve idle mixed pods (a generated backlog met 86% of its deadlines, 97% without it;
    docs/BENCHMARKS.md).
    """
    # NaN compares False: an unknown gauge never justifies growth.
    if gateway:
        unrun = (1.0 - tuning.saturation_ratio) * measured
        admitted = signals.running_requests + min(signals.waiting_requests, unrun)
        return admitted >= tuning.saturation_ratio * measured
    full = signals.running_requests >= tuning.saturation_ratio * measured
    return full or signals.waiting_requests > 0.0


def _ewma(previous: float | None, sample: float, weight: float) -> float | None:
    if not is_known(sample):
        return previous
    if previous is None:
        return sample
    return weight * sample + (1.0 - weight) * previous


def _clamp(value: int, bounds: RoleBounds) -> int:
    return min(max(value, bounds.min_batch_size_seqs), bounds.max_batch_size_seqs)


def _clamp_verdict(proposal: Verdict, bounds: RoleBounds) -> Verdict:
    value = _clamp(proposal.value, bounds)
    if value == proposal.value:
        return proposal
    which = "max" if value < proposal.value else "min"
    return Verdict(value, Reason.BATCH_SIZE_AT_BOUND, f"{proposal.message}, {which} bound {value}")


def _remember(tick: _Tick, ewma: float | None, value: int, *, baseline_known: bool) -> LocalState:
    """Memory for the next tick; the throughput baseline lives only while the last move is up.

    The baseline is the throughput measured at the size before the increase, exactly TBP's
    numerator, when its window holds that size alone (`baseline_known`). On the fast path an
    increase may follow another before a rate window has passed: the baseline measured before
    the first of them stays, and TBP asks whether the growth since then cost throughput.
    """
    state, measured = tick.state, tick.measured
    before = state.throughput_before_increase_tokens_per_s
    if value > measured and baseline_known:
        now = tick.signals.generation_tokens_per_s
        before = now if is_known(now) else None
    elif value < measured:
        before = None
    return replace(
        state,
        ewma_itl_s=ewma,
        throughput_before_increase_tokens_per_s=before,
        target_max_num_seqs=value,
    )


def _stamp(new: LocalState, cover: Coverage, clock: SignalClock, measured: int) -> LocalState:
    """Date a change of the size the pods run: the settle rule's reference.

    The gateway caps pods at the target under the ceiling, so a new target changes that now.
    Otherwise the last change keeps the date `coverage` gave it (later than decided while a
    decrease drains, now for a size taken without a decision of this controller). A change
    or a later date drops the EWMA at the new size: no sample is measured wholly after it yet.
    """
    target = new.target_max_num_seqs if new.target_max_num_seqs is not None else measured
    runs = max(1, min(clock.ceiling_seqs, target))
    before: int | None = measured
    if runs != measured:
        changed_s, after = clock.now_s, runs
    elif cover.changed_at_s is not None:
        changed_s, after = cover.changed_at_s, measured
        seen = new.last_change_to_seqs
        before = new.last_change_from_seqs if seen == measured else seen
    else:
        return new
    settled = new.settled_ewma_itl_s if changed_s == new.last_change_s else None
    return replace(
        new,
        last_change_s=changed_s,
        last_change_from_seqs=before,
        last_change_to_seqs=after,
        settled_ewma_itl_s=settled,
    )
