"""Mean ITL at a load step: running sequences and the token rate over the same short range.

The plant: one mixed pod whose iteration takes `ITL_BASE_S + ITL_PER_SEQ_S * n` with `n`
sequences running (one token per sequence per iteration, as in tests/control/fluid.py), and
whose load steps from 4 to 32 sequences. It is scraped every second. A source reports
`mean_itl_s` as the mean of the running samples over the token rate, both over the ITL range
(`itl_window_s`: the newest two scrapes; PromQL's `avg_over_time` and `rate` over one range).
The pod's true per-token latency never exceeds 46 ms, well inside the 100 ms SLO (80 ms
target): nothing should shrink its batch.
"""

from __future__ import annotations

import math

import pytest

from chiron_operator.control.global_scaling import busy_share
from chiron_operator.control.local import decide_local, local_signals
from chiron_operator.control.pool_view import mean_itl_s
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, RoleSnapshot, itl_window_s
from chiron_operator.core.state import LocalState
from chiron_operator.core.tuning import LocalTuning, PoolTuning, RoleBounds

ITL_BASE_S = 0.02
ITL_PER_SEQ_S = 0.0008
BEFORE_SEQS, AFTER_SEQS = 4, 32
STEP_S = 100.0
WINDOW_S = 60.0
SCRAPE_S = 1.0
TICK_S = 2.0
SLO_S = 0.1
CAP_SEQS = 32
ITL_RANGE_S = itl_window_s(SCRAPE_S, WINDOW_S)
TUNING = LocalTuning()  # defaults: target 80% of the SLO, EWMA weight 0.3
BOUNDS = RoleBounds(min_batch_size_seqs=4, max_batch_size_seqs=64)


def running_at(t_s: float) -> int:
    return BEFORE_SEQS if t_s < STEP_S else AFTER_SEQS


def iteration_s(seqs: int) -> float:
    return ITL_BASE_S + ITL_PER_SEQ_S * seqs


def tokens_until(t_s: float) -> float:
    """The generation-tokens counter: every running sequence gets a token per iteration."""
    before = min(t_s, STEP_S) * BEFORE_SEQS / iteration_s(BEFORE_SEQS)
    after = max(0.0, t_s - STEP_S) * AFTER_SEQS / iteration_s(AFTER_SEQS)
    return before + after


def true_mean_itl_s(end_s: float, range_s: float) -> float:
    """Mean gap between a sequence's tokens over `range_s`, token-weighted (as TPOT is)."""
    start_s = end_s - range_s
    seq_seconds = sum(
        (min(hi, end_s) - max(lo, start_s)) * seqs
        for lo, hi, seqs in ((-math.inf, STEP_S, BEFORE_SEQS), (STEP_S, math.inf, AFTER_SEQS))
        if min(hi, end_s) > max(lo, start_s)
    )
    return seq_seconds / (tokens_until(end_s) - tokens_until(start_s))


def scraped_pod(end_s: float, *, windowed: bool = True) -> PodSignals:
    """The pod as the adapter reads it at `end_s`; without the mean ITL when not `windowed` (a
    source that does not report it: newest gauge over the window's rate, the formula before
    the fix)."""
    rate = (tokens_until(end_s) - tokens_until(end_s - WINDOW_S)) / WINDOW_S
    # The samples of the left-open range (end - ITL range, end]: the newest two.
    scrapes = [end_s - i * SCRAPE_S for i in range(round(ITL_RANGE_S / SCRAPE_S))]
    span_s = scrapes[0] - scrapes[-1]
    recent_rate = (tokens_until(scrapes[0]) - tokens_until(scrapes[-1])) / span_s
    mean = sum(running_at(t) for t in scrapes) / len(scrapes) / recent_rate
    return PodSignals(
        name="mixed-0",
        role=Role.MIXED,
        ready=True,
        max_num_seqs=CAP_SEQS,
        running_requests=float(running_at(end_s)),
        waiting_requests=0.0,
        generation_tokens_per_s=rate,
        mean_itl_s=mean if windowed else math.nan,
        ttft_s=0.3,
        itl_s=0.05,
        sample_age_s=1.0,
    )


def test_new_estimate_tracks_the_true_mean_where_the_old_one_spikes() -> None:
    end_s = STEP_S + 10.0  # 10 s of the 60 s window at 32 sequences
    old = mean_itl_s(scraped_pod(end_s, windowed=False))
    new = mean_itl_s(scraped_pod(end_s))
    # 32 sequences over a rate still mostly made by 4: 123 ms, over the 100 ms SLO although
    # no token ever took longer than 46 ms.
    assert old == pytest.approx(0.1228, abs=5e-4)
    assert old > SLO_S > iteration_s(AFTER_SEQS)
    # The short range holds only the new load: the latency the pod has now.
    assert new == pytest.approx(iteration_s(AFTER_SEQS))
    assert new == pytest.approx(true_mean_itl_s(end_s, SCRAPE_S))


def test_itl_range_is_the_newest_two_scrapes_within_the_window() -> None:
    assert itl_window_s(SCRAPE_S, WINDOW_S) == 2.0
    assert itl_window_s(15.0, 60.0) == 30.0
    assert itl_window_s(45.0, 60.0) == 60.0  # never longer than the rates' window


@pytest.mark.parametrize("after_step_s", [0.5, 1.0, 2.0, 10.0, 30.0, 59.0, 60.0, 90.0])
def test_new_estimate_stays_within_the_plants_latency_range(after_step_s: float) -> None:
    end_s = STEP_S + after_step_s
    new = mean_itl_s(scraped_pod(end_s))
    # Within one scrape of the step the two samples straddle it: between the two latencies.
    assert iteration_s(BEFORE_SEQS) - 1e-12 <= new <= iteration_s(AFTER_SEQS) + 1e-12
    if after_step_s >= SCRAPE_S:
        assert new == pytest.approx(iteration_s(AFTER_SEQS))


def test_a_scrape_at_the_step_itself_over_reads_for_one_tick_only() -> None:
    # The gauge reads 32 at the step's instant while the interval's tokens came at 4: the two
    # samples' mean over that rate, 4.5x the latency then. One tick, which the local EWMA damps
    # (next test); the old formula read 8x at every tick of the window.
    at_step = mean_itl_s(scraped_pod(STEP_S))
    assert at_step == pytest.approx((BEFORE_SEQS + AFTER_SEQS) / 2 / BEFORE_SEQS * iteration_s(4))
    assert mean_itl_s(scraped_pod(STEP_S + SCRAPE_S)) == pytest.approx(iteration_s(AFTER_SEQS))


def test_steady_state_both_estimates_agree() -> None:
    steady = STEP_S + WINDOW_S + 5.0
    new = mean_itl_s(scraped_pod(steady))
    assert new == pytest.approx(mean_itl_s(scraped_pod(steady, windowed=False)))
    assert new == pytest.approx(iteration_s(AFTER_SEQS))


def test_without_a_mean_itl_the_newest_gauge_over_the_rate_stands_in() -> None:
    pod = scraped_pod(STEP_S + 10.0, windowed=False)
    assert mean_itl_s(pod) == pytest.approx(AFTER_SEQS / pod.generation_tokens_per_s)


def test_a_zero_or_infinite_mean_itl_is_no_estimate() -> None:
    # 0: nothing ran over the range; inf: PromQL's x / 0 for a pod that emitted no token. Both
    # fall back to the newest gauge over the window's rate, which is NaN without a rate.
    for reported in (0.0, math.inf):
        pod = PodSignals(
            "idle", Role.MIXED, True, CAP_SEQS, running_requests=3.0, mean_itl_s=reported
        )
        assert math.isnan(mean_itl_s(pod))


# The tick at the step itself, the first to see it (after 10 s of steady state, 2 s ticks).
STEPPED_TICK = 5


def run_local(*, windowed: bool) -> list[tuple[int, Reason]]:
    """Local-controller ticks over the window after the step, steady state before it.

    The pods keep running the cap they have (no restart lands within the window), so every
    tick judges the same plant; the state (EWMA, pending target) carries over.
    """
    state = LocalState()
    ticks = [STEP_S - 10.0 + i * TICK_S for i in range(round((WINDOW_S + 10.0) / TICK_S) + 1)]
    verdicts = []
    for now_s in ticks:
        role = RoleSnapshot(Role.MIXED, 1, 1, 0, CAP_SEQS, (scraped_pod(now_s, windowed=windowed),))
        verdict, state = decide_local(
            local_signals(role, 60.0), CAP_SEQS, SLO_S, BOUNDS, TUNING, state
        )
        verdicts.append((verdict.value, verdict.reason))
    return verdicts


def test_local_controller_does_not_halve_on_a_load_step_with_healthy_latency() -> None:
    old = run_local(windowed=False)
    new = run_local(windowed=True)
    # Before the fix: one tick after the step the EWMA of 168 ms readings passes the 80 ms
    # target and the batch halves, just as the load arrives.
    assert old[STEPPED_TICK + 1] == (CAP_SEQS // 2, Reason.BATCH_SIZE_LATENCY_BACKPRESSURE)
    # After: the pod is full (32 of 32) with a per-token latency far under target, so the
    # controller asks for more, never less.
    assert all(reason is not Reason.BATCH_SIZE_LATENCY_BACKPRESSURE for _, reason in new)
    assert all(value >= CAP_SEQS for value, _ in new)
    value, reason = new[STEPPED_TICK + 1]
    assert reason is Reason.BATCH_SIZE_INCREASE and value > CAP_SEQS


def test_unsplit_mixed_pod_is_not_busy_on_a_load_step_with_healthy_latency() -> None:
    # The global controller's busy judgement reads the same estimate (TTFT fine at 0.3 s).
    slo = PoolTuning().slo
    step = STEP_S + 10.0
    assert busy_share(scraped_pod(step, windowed=False), 0.8, slo, itl_target_ratio=0.8) == 1.0
    assert busy_share(scraped_pod(step), 0.8, slo, itl_target_ratio=0.8) == 0.0
