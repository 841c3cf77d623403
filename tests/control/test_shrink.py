"""A decrease that would not bind holds: when the busiest pod runs no more than the smaller
cap, the latency comes from something the cap does not govern."""

from __future__ import annotations

import pytest

from chiron_operator.control.backpressure import backpressure, decrease, shrink
from chiron_operator.control.fast_path import SignalClock
from chiron_operator.control.local import LocalSignals, decide_local
from chiron_operator.core.enums import Reason
from chiron_operator.core.snapshot import NAN
from chiron_operator.core.state import LocalState
from chiron_operator.core.tuning import LocalTuning, RoleBounds

SLO_S = 0.1
TUNING = LocalTuning(itl_target_ratio=1.0)  # LBP = ITL / SLO
BOUNDS = RoleBounds(min_batch_size_seqs=1, max_batch_size_seqs=256)
# 142 ms against the 100 ms target: LBP 1.42, a halving.
OVER = backpressure(0.142, SLO_S, None, 1000.0, TUNING, judge_throughput=False)


def sig(peak: float, itl_s: float = 0.142, running: float | None = None) -> LocalSignals:
    mean = peak if running is None else running
    return LocalSignals(itl_s, 1000.0, mean, 0.0, 2, 5.0, peak)


@pytest.mark.parametrize("peak", [NAN, 33.0, 64.0])
def test_a_binding_or_unknown_peak_decreases(peak: float) -> None:
    assert shrink(OVER, sig(peak), 64, TUNING) == decrease(OVER, 64, TUNING)


@pytest.mark.parametrize("peak", [32.0, 20.0, 0.0])
def test_a_cap_the_busiest_pod_fits_under_holds(peak: float) -> None:
    verdict = shrink(OVER, sig(peak), 64, TUNING)
    assert (verdict.value, verdict.reason) == (64, Reason.BATCH_SIZE_UNSATURATED)
    assert verdict.message == (
        f"ITL EWMA 142 ms vs target 100 ms (LBP 1.42), TBP 0.00, but the busiest pod runs "
        f"{peak:.0f}: a cap of 32 would not bind: hold 64"
    )


def test_the_busiest_pod_decides_not_the_mean() -> None:
    # Two pods at 40 and 4 average 22, under 32; the busy one still exceeds the halved cap.
    verdict, _ = decide_local(sig(40.0, running=22.0), 64, SLO_S, BOUNDS, TUNING, LocalState())
    assert (verdict.value, verdict.reason) == (32, Reason.BATCH_SIZE_LATENCY_BACKPRESSURE)


def test_the_plain_decrease_holds_when_it_would_not_bind() -> None:
    verdict, state = decide_local(sig(20.0), 64, SLO_S, BOUNDS, TUNING, LocalState())
    assert (verdict.value, verdict.reason) == (64, Reason.BATCH_SIZE_UNSATURATED)
    assert "but the busiest pod runs 20: a cap of 32 would not bind: hold 64" in verdict.message
    assert state.target_max_num_seqs == 64


def test_the_fast_path_decrease_holds_when_it_would_not_bind() -> None:
    # Halved 32 -> 16 at t = 0; at 45 s the windows cover 16 alone and still read 120 ms, but
    # the busiest pod runs 8: halving again to 8 would not bind. (The EWMA's proposal already
    # holds, so the settled EWMA is not consulted: both would shrink to the same 8.)
    state = LocalState(
        ewma_itl_s=0.12,
        target_max_num_seqs=16,
        last_change_s=0.0,
        last_change_from_seqs=32,
        last_change_to_seqs=16,
    )
    at = SignalClock(45.0, rate_window_s=60.0, itl_window_s=30.0, ceiling_seqs=64)
    tuning = LocalTuning()  # the default target: 80 ms of the 100 ms SLO
    verdict, _ = decide_local(sig(8.0, itl_s=0.12), 16, SLO_S, BOUNDS, tuning, state, at)
    assert (verdict.value, verdict.reason) == (16, Reason.BATCH_SIZE_UNSATURATED)
    assert verdict.message == (
        "ITL EWMA 120 ms vs target 80 ms (LBP 1.50), TBP 0.00, but the busiest pod runs 8: "
        "a cap of 8 would not bind: hold 16"
    )
    # Nine running on the busiest pod: 8 binds, and the settled decrease goes through.
    binding, _ = decide_local(sig(9.0, itl_s=0.12), 16, SLO_S, BOUNDS, tuning, state, at)
    assert (binding.value, binding.reason) == (8, Reason.BATCH_SIZE_LATENCY_BACKPRESSURE)
    assert "ITL EWMA at 16 alone 120 ms" in binding.message


def test_idle_pods_with_slow_tokens_keep_their_cap() -> None:
    """The walk the rule stops: pods running 3 requests at a 200 ms ITL (prefills, not the cap)
    used to halve 64 down to 2; every halving above 3 is a cap that would not bind."""
    state, sizes = LocalState(), []
    applied = 64
    for _ in range(10):
        running = min(3.0, applied)
        verdict, state = decide_local(
            sig(running, itl_s=0.2), applied, SLO_S, BOUNDS, TUNING, state
        )
        applied = verdict.value
        sizes.append(applied)
    assert sizes == [64] * 10
