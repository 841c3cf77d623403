"""The local controller's backpressures and the steps they call for, with their messages.

LBP = ITL estimate / (ITL SLO x `itl_target_ratio`); TBP = throughput before the last increase
/ throughput now, counted only for a drop beyond the tolerance. BP = max(LBP, TBP): BP >= 1
scales the batch by `decrease_factor_ratio`, BP < 1 grows it by more the further BP is from 1.
Which ITL estimate and whether TBP may be judged is the caller's (`local.decide_local`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason
from chiron_operator.core.snapshot import NAN, is_known
from chiron_operator.core.tuning import LocalTuning

# Throughput at or below this is "nothing"; it keeps TBP finite when throughput collapses.
_NEGLIGIBLE_TOKENS_PER_S = 1e-3
# A latency a million times its target: as far over as a ratio needs to say.
MAX_BACKPRESSURE = 1e6


@dataclass(frozen=True, slots=True)
class LocalSignals:
    """A role's load and latency, aggregated over its fresh ready pods (NaN = not observed).

    `itl_s` is the highest pod mean ITL (the conservative choice: every pod of a role runs the
    same cap, so the worst pod decides), from running sequences over tokens per second, or the
    histogram's quantile when no pod runs anything; the others are means per fresh pod.
    `running_requests` and `waiting_requests` are the newest gauges, not window means: they
    judge whether the batch is full now, which is what growing it needs. `sample_age_s` is the
    age of the oldest newest sample among those pods (every signal ends at or after it), and
    `peak_running_requests` the most requests one of them runs: both date the signals against
    a change of the batch size (`fast_path.coverage`).
    """

    itl_s: float
    generation_tokens_per_s: float
    running_requests: float
    waiting_requests: float
    fresh_pods: int
    sample_age_s: float = 0.0
    peak_running_requests: float = NAN


@dataclass(frozen=True, slots=True)
class Backpressure:
    """LBP from `itl_s` (an EWMA, named by `itl_label`) and TBP, with what they came from."""

    lbp: float
    tbp: float
    itl_s: float | None
    itl_target_s: float | None
    throughput_before: float | None
    throughput_now: float
    itl_label: str = "ITL EWMA"

    @property
    def value(self) -> float:
        return max(self.lbp, self.tbp)

    def describe(self) -> str:
        if self.itl_target_s is None or self.itl_s is None:
            latency = "no ITL SLO"
        else:
            latency = (
                f"{self.itl_label} {self.itl_s * 1000:.0f} ms vs target "
                f"{self.itl_target_s * 1000:.0f} ms (LBP {self.lbp:.2f})"
            )
        if self.tbp == 0.0 or self.throughput_before is None:
            return f"{latency}, TBP 0.00"
        return (
            f"{latency}, throughput {self.throughput_now:.0f} tok/s vs "
            f"{self.throughput_before:.0f} before the last increase (TBP {self.tbp:.2f})"
        )


def backpressure(  # noqa: PLR0917 -- a pure formula over named inputs
    itl_s: float | None,
    itl_target_s: float | None,
    throughput_before: float | None,
    throughput_now: float,
    tuning: LocalTuning,
    judge_throughput: bool,
    itl_label: str = "ITL EWMA",
) -> Backpressure:
    """LBP of `itl_s` against the target (0 without one), TBP only when `judge_throughput`."""
    lbp = _lbp(itl_s, itl_target_s)
    tbp = 0.0
    if judge_throughput:
        tbp = _tbp(throughput_before, throughput_now, tuning.throughput_tolerance_ratio)
    return Backpressure(lbp, tbp, itl_s, itl_target_s, throughput_before, throughput_now, itl_label)


def _lbp(itl_s: float | None, itl_target_s: float | None) -> float:
    """LBP, 0 without a target or a sample, and at most `MAX_BACKPRESSURE`.

    A target that underflowed to 0 (a tiny SLO times a tiny target ratio) or a sample at
    infinity (Prometheus's histogram_quantile in the +Inf bucket) means as far over target
    as it gets: the batch shrinks, and the number in status and Reasons stays finite.
    """
    if itl_target_s is None or itl_s is None:
        return 0.0
    if itl_target_s <= 0.0:
        return MAX_BACKPRESSURE if itl_s > 0.0 else 0.0
    return min(itl_s / itl_target_s, MAX_BACKPRESSURE)


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


def decrease(pressure: Backpressure, measured: int, tuning: LocalTuning) -> Verdict:
    factor = tuning.decrease_factor_ratio
    # Floor, so every decrease is a real one; 0 is left for the clamp to lift to the minimum.
    value = math.floor(measured * factor)
    verb = "halve" if factor == 0.5 else f"scale by {factor:g}"
    if pressure.lbp >= pressure.tbp:
        reason = Reason.BATCH_SIZE_LATENCY_BACKPRESSURE
    else:
        reason = Reason.BATCH_SIZE_THROUGHPUT_BACKPRESSURE
    return Verdict(value, reason, f"{pressure.describe()}: {verb} {measured} -> {value}")


def shrink(
    pressure: Backpressure, signals: LocalSignals, measured: int, tuning: LocalTuning
) -> Verdict:
    """`decrease`, unless the smaller cap would not bind: then hold, and say why.

    A cap only lowers latency by keeping sequences out; when the busiest pod already runs no
    more than the decreased size, the time between its tokens comes from something the cap
    does not govern (prefills of arriving prompts, or the noise of a pod that ran one request
    in the window). Halving anyway walked a 70B pool's mixed caps from 32 to 1 as its pods
    went idle, and each pod then read as busy at one sequence: the pool scaled to its max.
    """
    verdict = decrease(pressure, measured, tuning)
    peak = signals.peak_running_requests
    if not is_known(peak) or peak > verdict.value:
        return verdict
    message = (
        f"{pressure.describe()}, but the busiest pod runs {peak:.0f}: a cap of "
        f"{verdict.value} would not bind: hold {measured}"
    )
    return Verdict(measured, Reason.BATCH_SIZE_UNSATURATED, message)


def increase(
    pressure: Backpressure, signals: LocalSignals, measured: int, tuning: LocalTuning
) -> Verdict:
    relative = tuning.increase_max_ratio * (1.0 - pressure.value)
    step = max(tuning.increase_min_step_seqs, round(measured * relative))
    value = measured + step
    message = (
        f"{pressure.describe()}; batch full ({load(signals, measured)}): grow {measured} -> {value}"
    )
    return Verdict(value, Reason.BATCH_SIZE_INCREASE, message)


def hold_unsaturated(
    pressure: Backpressure,
    signals: LocalSignals,
    measured: int,
    tuning: LocalTuning,
    gateway: bool = False,
) -> Verdict:
    # Within target at this load, and the cap does not bind: a pending change either way is
    # dropped. An increase nobody would use buys nothing; a decrease decided at a higher load
    # would restart pods that no longer fill their cap (surge GPU time, and a role that cannot
    # scale in while its replacements start). If the load returns and the latency with it,
    # BP >= 1 decides the decrease again.
    # With a gateway fullness counts what it admitted, the pod's own queue only up to the
    # cap's unsaturated share (`local._is_saturated`).
    needs = "admitted" if gateway else "or a queue"
    message = (
        f"{pressure.describe()}; batch not full ({load(signals, measured)}, "
        f"needs {tuning.saturation_ratio:.0%} {needs}): hold {measured}"
    )
    return Verdict(measured, Reason.BATCH_SIZE_UNSATURATED, message)


def load(signals: LocalSignals, measured: int) -> str:
    waiting = signals.waiting_requests
    queue = f"{waiting:.1f} waiting" if is_known(waiting) else "waiting unknown"
    return f"{signals.running_requests:.1f}/{measured} running, {queue}"
