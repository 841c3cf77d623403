"""Chiron's local autoscaler: the batch size (vLLM --max-num-seqs) one role should run.

Backpressure BP = max(LBP, TBP). LBP = EWMA(ITL) / (ITL SLO x `itl_target_ratio`) says how close
the role is to its latency objective, ITL being the pods' mean gap between a sequence's tokens
(running sequences over tokens per second, both averaged over the same window, see
`pool_view.mean_itl_s`): the per-request mean ITL the SLO is checked on averages exactly that,
stalls included. TBP = throughput before the last increase / throughput now says whether the
last increase cost throughput. BP >= 1 shrinks the batch multiplicatively; BP < 1 grows it, by
more the further BP is from 1, but only while the batch is actually full.

Every step is taken from `applied_seqs`, the size the pods ran while the signals were measured,
not from the last target: the target may be waiting for a restart (the slow path is
rate-limited), and compounding steps the pods never ran would walk the target to a bound on no
evidence. When the two agree (the usual case, and always once a restart lands) this is exactly
the paper's "step from the current batch size".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from chiron_operator.control.pool_view import mean_itl_s
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason
from chiron_operator.core.snapshot import NAN, PodSignals, RoleSnapshot, is_known
from chiron_operator.core.state import LocalState
from chiron_operator.core.tuning import LocalTuning, RoleBounds

# Throughput at or below this is "nothing"; it keeps TBP finite when throughput collapses.
_NEGLIGIBLE_TOKENS_PER_S = 1e-3


@dataclass(frozen=True, slots=True)
class LocalSignals:
    """A role's load and latency, aggregated over its fresh ready pods (NaN = not observed).

    `itl_s` is the highest pod mean ITL (the conservative choice: every pod of a role runs the
    same cap, so the worst pod decides), from running sequences over tokens per second, or the
    histogram's quantile when no pod runs anything; the others are means per fresh pod.
    `running_requests` and `waiting_requests` are the newest gauges, not window means: they
    judge whether the batch is full now, which is what growing it needs.
    """

    itl_s: float
    generation_tokens_per_s: float
    running_requests: float
    waiting_requests: float
    fresh_pods: int


@dataclass(frozen=True, slots=True)
class _Backpressure:
    lbp: float
    tbp: float
    ewma_itl_s: float | None
    itl_target_s: float | None
    throughput_before: float | None
    throughput_now: float

    @property
    def value(self) -> float:
        return max(self.lbp, self.tbp)

    def describe(self) -> str:
        if self.itl_target_s is None or self.ewma_itl_s is None:
            latency = "no ITL SLO"
        else:
            latency = (
                f"ITL EWMA {self.ewma_itl_s * 1000:.0f} ms vs target "
                f"{self.itl_target_s * 1000:.0f} ms (LBP {self.lbp:.2f})"
            )
        if self.tbp == 0.0 or self.throughput_before is None:
            return f"{latency}, TBP 0.00"
        return (
            f"{latency}, throughput {self.throughput_now:.0f} tok/s vs "
            f"{self.throughput_before:.0f} before the last increase (TBP {self.tbp:.2f})"
        )


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
    )


def _is_fresh(pod: PodSignals, staleness_s: float) -> bool:
    return pod.ready and pod.sample_age_s <= staleness_s and is_known(pod.running_requests)


def _mean_known(values: Iterable[float]) -> float:
    known = [v for v in values if is_known(v)]
    return sum(known) / len(known) if known else NAN


def decide_local(  # noqa: PLR0917 -- the composed policy's contract is positional
    signals: LocalSignals,
    applied_seqs: int,
    itl_slo_s: float | None,
    bounds: RoleBounds,
    tuning: LocalTuning,
    state: LocalState,
) -> tuple[Verdict, LocalState]:
    """The batch size (--max-num-seqs) a role should run, and the controller's new memory.

    `applied_seqs` is the cap the pods run now; `itl_slo_s` is None for roles without an ITL
    objective (batch), which then follow throughput backpressure only. On missing data the last
    target holds (clamped to the bounds) and the state is returned unchanged.
    """
    current = state.target_max_num_seqs if state.target_max_num_seqs is not None else applied_seqs
    missing = _missing_cause(signals, itl_slo_s)
    if missing is not None:
        held = _clamp(current, bounds)
        return Verdict(held, Reason.METRICS_MISSING, f"{missing}: hold {held}"), state
    measured = max(applied_seqs, 1)
    saturated = _is_saturated(signals, measured, tuning)
    ewma = _ewma(state.ewma_itl_s, signals.itl_s, tuning.itl_ewma_weight_ratio)
    # TBP needs the new size to have run (no increase waiting for its restart) and a full
    # batch: an unsaturated role's throughput measures its demand, not what the size allows.
    judge_throughput = saturated and current <= measured
    pressure = _backpressure(
        signals, ewma, itl_slo_s, state, tuning, judge_throughput=judge_throughput
    )
    if pressure.value >= 1.0:
        proposal = _decrease(pressure, measured, tuning)
    elif saturated:
        proposal = _increase(pressure, signals, measured, tuning)
    else:
        # Within target at this load, and the cap does not bind: a pending change either way
        # is dropped. An increase nobody would use buys nothing; a decrease decided at a
        # higher load would restart pods that no longer fill their cap (surge GPU time, and
        # a role that cannot scale in while its replacements start). If the load returns and
        # the latency with it, BP >= 1 decides the decrease again.
        proposal = _hold_unsaturated(pressure, signals, measured, measured, tuning)
    verdict = _clamp_verdict(proposal, bounds)
    return verdict, _remember(state, ewma, verdict.value, measured, signals)


def _missing_cause(signals: LocalSignals, itl_slo_s: float | None) -> str | None:
    """Why the signals cannot support a decision, or None when they can."""
    if signals.fresh_pods == 0:
        return "no ready pod reported fresh metrics"
    if itl_slo_s is not None and not is_known(signals.itl_s):
        return f"ITL not observed on {signals.fresh_pods} fresh pods"
    if itl_slo_s is None and not is_known(signals.generation_tokens_per_s):
        return f"generation throughput not observed on {signals.fresh_pods} fresh pods"
    return None


def _is_saturated(signals: LocalSignals, measured: int, tuning: LocalTuning) -> bool:
    # NaN compares False: an unknown gauge never justifies growth.
    full = signals.running_requests >= tuning.saturation_ratio * measured
    return full or signals.waiting_requests > 0.0


def _ewma(previous: float | None, sample: float, weight: float) -> float | None:
    if not is_known(sample):
        return previous
    if previous is None:
        return sample
    return weight * sample + (1.0 - weight) * previous


def _backpressure(
    signals: LocalSignals,
    ewma: float | None,
    itl_slo_s: float | None,
    state: LocalState,
    tuning: LocalTuning,
    *,
    judge_throughput: bool,
) -> _Backpressure:
    target_s = None if itl_slo_s is None else itl_slo_s * tuning.itl_target_ratio
    lbp = 0.0 if target_s is None or ewma is None else ewma / target_s
    before = state.throughput_before_increase_tokens_per_s
    now = signals.generation_tokens_per_s
    tbp = _tbp(before, now, tuning.throughput_tolerance_ratio) if judge_throughput else 0.0
    return _Backpressure(lbp, tbp, ewma, target_s, before, now)


def _tbp(before: float | None, now: float, tolerance: float) -> float:
    """TBP, counted only for a drop beyond the tolerance after an increase (else 0).

    Nothing produced before the increase means nothing could be lost; a collapse to nothing
    after it is the strongest drop there is, kept finite so the message stays readable.
    """
    if before is None or before <= _NEGLIGIBLE_TOKENS_PER_S or not is_known(now):
        return 0.0
    if now >= before * (1.0 - tolerance):
        return 0.0
    return before / max(now, _NEGLIGIBLE_TOKENS_PER_S)


def _decrease(pressure: _Backpressure, measured: int, tuning: LocalTuning) -> Verdict:
    factor = tuning.decrease_factor_ratio
    # Floor, so every decrease is a real one; 0 is left for the clamp to lift to the minimum.
    value = math.floor(measured * factor)
    verb = "halve" if factor == 0.5 else f"scale by {factor:g}"
    if pressure.lbp >= pressure.tbp:
        reason = Reason.BATCH_SIZE_LATENCY_BACKPRESSURE
    else:
        reason = Reason.BATCH_SIZE_THROUGHPUT_BACKPRESSURE
    return Verdict(value, reason, f"{pressure.describe()}: {verb} {measured} -> {value}")


def _increase(
    pressure: _Backpressure, signals: LocalSignals, measured: int, tuning: LocalTuning
) -> Verdict:
    relative = tuning.increase_max_ratio * (1.0 - pressure.value)
    step = max(tuning.increase_min_step_seqs, round(measured * relative))
    value = measured + step
    message = (
        f"{pressure.describe()}; batch full ({_load(signals, measured)}): "
        f"grow {measured} -> {value}"
    )
    return Verdict(value, Reason.BATCH_SIZE_INCREASE, message)


def _hold_unsaturated(
    pressure: _Backpressure,
    signals: LocalSignals,
    held: int,
    measured: int,
    tuning: LocalTuning,
) -> Verdict:
    message = (
        f"{pressure.describe()}; batch not full ({_load(signals, measured)}, "
        f"needs {tuning.saturation_ratio:.0%} or a queue): hold {held}"
    )
    return Verdict(held, Reason.BATCH_SIZE_UNSATURATED, message)


def _load(signals: LocalSignals, measured: int) -> str:
    waiting = signals.waiting_requests
    queue = f"{waiting:.1f} waiting" if is_known(waiting) else "waiting unknown"
    return f"{signals.running_requests:.1f}/{measured} running, {queue}"


def _clamp(value: int, bounds: RoleBounds) -> int:
    return min(max(value, bounds.min_batch_size_seqs), bounds.max_batch_size_seqs)


def _clamp_verdict(proposal: Verdict, bounds: RoleBounds) -> Verdict:
    value = _clamp(proposal.value, bounds)
    if value == proposal.value:
        return proposal
    which = "max" if value < proposal.value else "min"
    return Verdict(value, Reason.BATCH_SIZE_AT_BOUND, f"{proposal.message}, {which} bound {value}")


def _remember(
    state: LocalState, ewma: float | None, value: int, measured: int, signals: LocalSignals
) -> LocalState:
    """Memory for the next tick; the throughput baseline lives only while the last move is up."""
    before = state.throughput_before_increase_tokens_per_s
    if value > measured:
        # Measured at the size before the increase: exactly TBP's numerator.
        now = signals.generation_tokens_per_s
        before = now if is_known(now) else None
    elif value < measured:
        before = None
    return replace(
        state,
        ewma_itl_s=ewma,
        throughput_before_increase_tokens_per_s=before,
        target_max_num_seqs=value,
    )
