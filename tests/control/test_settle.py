"""The fast path's settle rule: with changes applied at once, the local controller moves again
the same way only on signals measured wholly at the size the pods run (`fast_path.Coverage`).

Timeline of every test here, as the simulator and the operator read Prometheus: the controller
ticks every 15 s, a scrape every 15 s is read 15 s old, the mean ITL covers the 30 s before
that sample and rates the 60 s before it. So after a change at t the ITL describes the new size
alone from t + 45 s, throughput from t + 75 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings

from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.control import chiron
from chiron_operator.control.fast_path import SignalClock, coverage
from chiron_operator.control.local import LocalSignals, decide_local
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.state import LocalState
from chiron_operator.core.tuning import LocalTuning, PoolTuning, RoleBounds
from chiron_operator.sim.scenario import load_scenario
from tests.control.fluid import FluidPool
from tests.control.test_local import Case, cases

SLO_S = 0.1
TUNING = LocalTuning()  # target 80 ms: 0.8 of the SLO
TARGET_S = SLO_S * TUNING.itl_target_ratio
BOUNDS = RoleBounds(min_batch_size_seqs=1, max_batch_size_seqs=256)
TICK_S = 15.0
AGE_S = 15.0
CEILING = 64


def clock(now_s: float, ceiling: int = CEILING) -> SignalClock:
    return SignalClock(now_s, rate_window_s=60.0, itl_window_s=30.0, ceiling_seqs=ceiling)


def sig(
    itl_s: float,
    running: float,
    *,
    tokens_per_s: float = 1000.0,
    waiting: float = 0.0,
    peak: float | None = None,
    age_s: float = AGE_S,
) -> LocalSignals:
    peak_running = running if peak is None else peak
    return LocalSignals(itl_s, tokens_per_s, running, waiting, 2, age_s, peak_running)


def after_decrease(at_s: float, ewma_s: float, *, to: int = 16) -> LocalState:
    """The memory right after this controller halved 2 x `to` to `to` at `at_s`."""
    return LocalState(
        ewma_itl_s=ewma_s,
        target_max_num_seqs=to,
        last_change_s=at_s,
        last_change_from_seqs=2 * to,
        last_change_to_seqs=to,
    )


def decide(
    signals: LocalSignals, running_seqs: int, state: LocalState, now_s: float, slo: float | None
) -> tuple[Verdict, LocalState]:
    return decide_local(signals, running_seqs, slo, BOUNDS, TUNING, state, clock(now_s))


# --- the compounding is gone -----------------------------------------------------------------


@dataclass
class LaggedPool:
    """A role whose ITL is a + b x batch, full at any cap, observed as Prometheus would: each
    tick reads a sample 15 s old, its mean ITL over the 30 s before it and its throughput over
    the 60 s before it, both averaged over the caps the pods actually ran then."""

    base_s: float = 0.02
    per_seq_s: float = 0.003  # 32 sequences: 116 ms, over the 80 ms target; 16: 68 ms
    caps: list[tuple[float, int]] = field(default_factory=lambda: [(-1e9, 32)])

    def itl_s(self, seqs: int) -> float:
        return self.base_s + self.per_seq_s * seqs

    def cap_at(self, t_s: float) -> int:
        return next(cap for since_s, cap in reversed(self.caps) if since_s <= t_s)

    def _mean(self, now_s: float, window_s: float, of: str) -> float:
        sample_s = now_s - AGE_S
        caps = [self.cap_at(sample_s - window_s + 0.5 + i) for i in range(int(window_s))]
        if of == "itl":
            return sum(map(self.itl_s, caps)) / len(caps)
        return sum(c / self.itl_s(c) for c in caps) / len(caps)

    def signals(self, now_s: float) -> LocalSignals:
        cap = self.cap_at(now_s)
        itl_s = self._mean(now_s, 30.0, "itl")
        return sig(itl_s, float(cap), tokens_per_s=self._mean(now_s, 60.0, "rate"))

    def run(self, ticks: int, *, fast_path: bool) -> list[Verdict]:
        """Apply every target at once, as the gateway does; with or without the settle rule."""
        state, verdicts = LocalState(ewma_itl_s=self.itl_s(32)), []
        for tick in range(ticks):
            now_s = tick * TICK_S
            running = self.cap_at(now_s)
            signals = self.signals(now_s)
            at = clock(now_s) if fast_path else None
            verdict, state = decide_local(signals, running, SLO_S, BOUNDS, TUNING, state, at)
            verdicts.append(verdict)
            if verdict.value != running:
                self.caps.append((now_s, verdict.value))
        return verdicts


def test_without_the_settle_rule_lagging_signals_compound_a_decrease() -> None:
    """The defect: the old controller, its targets applied at once, halves tick after tick."""
    sizes = [v.value for v in LaggedPool().run(6, fast_path=False)]
    assert sizes[:3] == [16, 8, 4]  # 16 sequences were enough: 68 ms


def test_a_lagging_ewma_after_a_decrease_does_not_decrease_again() -> None:
    verdicts = LaggedPool().run(40, fast_path=True)
    sizes = [v.value for v in verdicts]
    assert sizes[0] == 16
    assert min(sizes) == 16  # never halved again on the old size's samples
    settling = [v for v in verdicts[1:4] if v.reason is Reason.BATCH_SIZE_SETTLING]
    assert len(settling) >= 2  # the EWMA still read >= 80 ms, and was not trusted
    # Once the samples at 16 brought the EWMA under target it grew again, towards 20.
    assert max(sizes[4:]) > 16
    assert all(LaggedPool().itl_s(n) <= 1.15 * TARGET_S for n in sizes[8:])


def test_within_the_settle_time_the_same_decrease_holds_and_says_why() -> None:
    # Halved 32 -> 16 at t = 0; 15 s later the 30 s window still ends 15 s after the change.
    state = after_decrease(0.0, ewma_s=0.12)
    verdict, new_state = decide(sig(0.11, 16.0), 16, state, 15.0, SLO_S)
    assert (verdict.reason, verdict.value) == (Reason.BATCH_SIZE_SETTLING, 16)
    assert verdict.message.startswith(
        "settling: the last change (32 -> 16) 15 s ago, and the mean-ITL window (30 s) still "
        "reaches back before it: 30 s to go: hold 16 (was: ITL EWMA 117 ms vs target 80 ms"
    )
    assert new_state.target_max_num_seqs == 16
    assert new_state.settled_ewma_itl_s is None  # nothing measured at 16 alone yet
    assert new_state.last_change_s == 0.0  # holding is no change


@pytest.mark.parametrize(
    ("now_s", "age_s", "settled"),
    [
        (44.0, 15.0, False),  # window (-1, 29]: one second of 32 still in it
        (45.0, 15.0, True),  # window (0, 30]
        (45.0, 20.0, False),  # a later scrape: that sample's window still starts before
        (50.0, 20.0, True),
    ],
)
def test_the_settle_time_is_the_window_plus_the_samples_age(
    now_s: float, age_s: float, settled: bool
) -> None:
    state = after_decrease(0.0, ewma_s=0.12)
    verdict, _ = decide(sig(0.12, 16.0, age_s=age_s), 16, state, now_s, SLO_S)
    expected = Reason.BATCH_SIZE_LATENCY_BACKPRESSURE if settled else Reason.BATCH_SIZE_SETTLING
    assert verdict.reason is expected
    assert verdict.value == (8 if settled else 16)


def test_after_the_settle_time_real_pressure_decreases_again() -> None:
    # 16 is still too large: its first clean sample (120 ms) restarts the EWMA and agrees.
    state = after_decrease(0.0, ewma_s=0.12)
    verdict, new_state = decide(sig(0.12, 16.0), 16, state, 45.0, SLO_S)
    assert (verdict.reason, verdict.value) == (Reason.BATCH_SIZE_LATENCY_BACKPRESSURE, 8)
    assert "ITL EWMA at 16 alone 120 ms vs target 80 ms (LBP 1.50)" in verdict.message
    assert new_state.last_change_s == 45.0
    assert (new_state.last_change_from_seqs, new_state.last_change_to_seqs) == (16, 8)


def test_after_the_settle_time_a_relieved_size_holds_until_the_ewma_forgets() -> None:
    # The EWMA (0.3 x 60 + 0.7 x 120 = 102 ms) still carries 32; 16 alone measured 60 ms.
    state = after_decrease(0.0, ewma_s=0.12)
    verdict, new_state = decide(sig(0.06, 16.0), 16, state, 45.0, SLO_S)
    assert (verdict.reason, verdict.value) == (Reason.BATCH_SIZE_SETTLING, 16)
    assert "ITL EWMA at 16 alone 60 ms vs target 80 ms (LBP 0.75)" in verdict.message
    assert "the EWMA still carries the sizes before 32 -> 16" in verdict.message
    assert new_state.settled_ewma_itl_s == pytest.approx(0.06)
    assert new_state.ewma_itl_s == pytest.approx(0.102)


def test_a_move_the_other_way_needs_no_settle() -> None:
    # Straight after halving, an EWMA under target (biased up by the old size, so the new size
    # is further under) grows a full batch at once: EWMA 57 ms, LBP 0.71, +2.
    state = after_decrease(0.0, ewma_s=0.06)
    verdict, _ = decide(sig(0.05, 16.0), 16, state, 15.0, SLO_S)
    assert (verdict.reason, verdict.value) == (Reason.BATCH_SIZE_INCREASE, 18)


def test_an_increase_settles_on_the_itl_window_too() -> None:
    state = replace(after_decrease(0.0, ewma_s=0.03, to=16), last_change_from_seqs=12)
    held, _ = decide(sig(0.03, 16.0), 16, state, 30.0, SLO_S)
    assert (held.reason, held.value) == (Reason.BATCH_SIZE_SETTLING, 16)
    grown, _ = decide(sig(0.03, 16.0), 16, state, 45.0, SLO_S)
    assert (grown.reason, grown.value) == (Reason.BATCH_SIZE_INCREASE, 21)  # LBP 0.38: +5
    # ...and on the size alone: 16 measured at 85 ms must not grow on an EWMA of 12's samples.
    over, _ = decide(sig(0.085, 16.0), 16, replace(state, ewma_itl_s=0.02), 45.0, SLO_S)
    assert (over.reason, over.value) == (Reason.BATCH_SIZE_SETTLING, 16)


# --- the emergency acts at once --------------------------------------------------------------


@pytest.mark.parametrize(
    ("itl_s", "reason", "value"),
    [
        # target / decrease factor = 80 ms / 0.5: a window mixing 32 and 16 at 160 ms means 16
        # alone runs at 80 ms or more (ITL(16) >= ITL(32) / 2 >= sample / 2).
        (0.161, Reason.BATCH_SIZE_LATENCY_BACKPRESSURE, 8),
        (0.300, Reason.BATCH_SIZE_LATENCY_BACKPRESSURE, 8),
        (0.159, Reason.BATCH_SIZE_SETTLING, 16),  # could still be 32 talking
    ],
)
def test_an_itl_proving_the_new_size_over_target_decreases_at_once(
    itl_s: float, reason: Reason, value: int
) -> None:
    state = after_decrease(0.0, ewma_s=0.2)
    verdict, _ = decide(sig(itl_s, 16.0), 16, state, 15.0, SLO_S)
    assert (verdict.reason, verdict.value) == (reason, value)
    if reason is not Reason.BATCH_SIZE_SETTLING:
        assert f"at once: ITL {itl_s * 1000:.0f} ms, even with the old size" in verdict.message
        assert "is at least target / 0.5 = 160 ms" in verdict.message


def test_the_emergency_threshold_follows_the_decrease_factor() -> None:
    gentle = LocalTuning(decrease_factor_ratio=0.8)  # target / 0.8 = 100 ms
    state = after_decrease(0.0, ewma_s=0.2)
    at = clock(15.0)
    verdict, _ = decide_local(sig(0.101, 16.0), 16, SLO_S, BOUNDS, gentle, state, at)
    assert (verdict.reason, verdict.value) == (Reason.BATCH_SIZE_LATENCY_BACKPRESSURE, 12)


# --- a decrease lands once the pods drained, other changes are seen too ----------------------


def test_a_decrease_lands_only_when_the_pods_have_drained_to_the_new_cap() -> None:
    state = after_decrease(0.0, ewma_s=0.12)
    # 45 s on, one pod still runs 20 admitted before the cap fell to 16: not landed yet.
    verdict, new_state = decide(sig(0.12, 16.0, peak=20.0), 16, state, 45.0, SLO_S)
    assert (verdict.reason, verdict.value) == (Reason.BATCH_SIZE_SETTLING, 16)
    assert "the last change (32 -> 16) 0 s ago" in verdict.message
    assert new_state.last_change_s == 45.0
    # Drained at 45 s: its windows cover 16 alone from 90 s.
    verdict, _ = decide(sig(0.12, 16.0), 16, new_state, 75.0, SLO_S)
    assert verdict.reason is Reason.BATCH_SIZE_SETTLING
    verdict, _ = decide(sig(0.12, 16.0), 16, new_state, 90.0, SLO_S)
    assert (verdict.reason, verdict.value) == (Reason.BATCH_SIZE_LATENCY_BACKPRESSURE, 8)


def test_a_size_the_pods_took_without_a_decision_is_a_change_dated_now() -> None:
    # The ceiling was raised by a restart: the pods now run the target 48, last seen at 32.
    state = LocalState(
        ewma_itl_s=0.03,
        target_max_num_seqs=48,
        last_change_s=0.0,
        last_change_from_seqs=24,
        last_change_to_seqs=32,
    )
    cover = coverage(clock(600.0), state, 48, (AGE_S, 48.0))
    assert (cover.direction, cover.changed, cover.changed_at_s) == (1, "32 -> 48", 600.0)
    verdict, new_state = decide(sig(0.03, 48.0), 48, state, 600.0, SLO_S)
    assert verdict.reason is Reason.BATCH_SIZE_SETTLING
    assert (new_state.last_change_s, new_state.last_change_to_seqs) == (600.0, 48)


def test_a_target_above_the_ceiling_changes_nothing_the_pods_run() -> None:
    # The target 96 waits for the ceiling (64) to be raised: the pods still run 64.
    verdict, new_state = decide(sig(0.03, 64.0), 64, LocalState(ewma_itl_s=0.03), 0.0, SLO_S)
    assert verdict.value > CEILING
    assert new_state.last_change_s is None


# --- TBP ignores rates that straddle the change ----------------------------------------------


def after_increase(at_s: float, baseline: float | None = 1000.0) -> LocalState:
    return LocalState(
        throughput_before_increase_tokens_per_s=baseline,
        target_max_num_seqs=300,
        last_change_s=at_s,
        last_change_from_seqs=200,
        last_change_to_seqs=300,
    )


@pytest.mark.parametrize(("now_s", "judged"), [(60.0, False), (74.0, False), (75.0, True)])
def test_tbp_is_judged_only_on_a_rate_wholly_after_the_increase(now_s: float, judged: bool) -> None:
    signals = sig(math.nan, 300.0, tokens_per_s=700.0)
    bounds = RoleBounds(max_batch_size_seqs=4096)
    verdict, _ = decide_local(
        signals, 300, None, bounds, TUNING, after_increase(0.0), clock(now_s, ceiling=512)
    )
    if judged:
        assert (verdict.reason, verdict.value) == (Reason.BATCH_SIZE_THROUGHPUT_BACKPRESSURE, 150)
        assert "throughput 700 tok/s vs 1000 before the last increase" in verdict.message
    else:  # the straddling rate is not TBP; a batch pod's next increase waits for the rate
        assert (verdict.reason, verdict.value) == (Reason.BATCH_SIZE_SETTLING, 300)
        assert "the throughput window (60 s) still reaches back before it" in verdict.message


def test_a_baseline_is_measured_wholly_before_the_increase() -> None:
    # An increase 30 s after an earlier one (an interactive role, settled on its ITL): the rate
    # still straddles that change, so the baseline from before it stays.
    state = replace(after_increase(0.0), target_max_num_seqs=30, last_change_to_seqs=30)
    state = replace(state, last_change_from_seqs=20, ewma_itl_s=0.03)
    _, new_state = decide(sig(0.03, 30.0, tokens_per_s=1500.0), 30, state, 45.0, SLO_S)
    assert new_state.target_max_num_seqs is not None and new_state.target_max_num_seqs > 30
    assert new_state.throughput_before_increase_tokens_per_s == 1000.0
    # Long after the change the rate holds 30 alone: it is the new baseline.
    _, new_state = decide(sig(0.03, 30.0, tokens_per_s=1500.0), 30, state, 600.0, SLO_S)
    assert new_state.throughput_before_increase_tokens_per_s == 1500.0


# --- fullness under the gateway ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("running", "waiting", "reason"),
    [
        (30.0, 0.7, Reason.BATCH_SIZE_UNSATURATED),  # a prefill queue, not the cap binding
        # 37 of 41 admitted, but the pods run only 30: they, not the cap, hold the other 7.
        (30.0, 7.0, Reason.BATCH_SIZE_UNSATURATED),
        (34.0, 3.5, Reason.BATCH_SIZE_INCREASE),  # the queue fits the 10% a full batch leaves
        (37.0, 0.0, Reason.BATCH_SIZE_INCREASE),
    ],
)
def test_with_the_gateway_a_batch_is_full_when_the_pods_hold_the_cap(
    running: float, waiting: float, reason: Reason
) -> None:
    signals = sig(0.03, running, waiting=waiting)
    verdict, _ = decide(signals, 41, LocalState(ewma_itl_s=0.03), 0.0, SLO_S)
    assert verdict.reason is reason
    if reason is Reason.BATCH_SIZE_UNSATURATED:
        assert "needs 90% admitted" in verdict.message
    # Without a gateway vLLM queues what the cap keeps out: any queue means full.
    slow, _ = decide_local(signals, 41, SLO_S, BOUNDS, TUNING, LocalState(ewma_itl_s=0.03))
    assert slow.reason is (Reason.BATCH_SIZE_INCREASE if waiting else reason)


def test_with_the_gateway_a_pod_queueing_past_its_kv_does_not_grow_the_cap() -> None:
    """A batch pod that runs what its KV cache holds and queues the rest itself: a larger cap
    would only move the gateway's queue (which mixed pods and the batch rule see) into it."""
    kv_bound = sig(0.05, 179.0, waiting=677.0, tokens_per_s=4000.0)
    state = LocalState(target_max_num_seqs=864)
    bounds = RoleBounds(max_batch_size_seqs=4096)

    def decide(signals: LocalSignals, applied: int) -> tuple[Verdict, LocalState]:
        return decide_local(signals, applied, None, bounds, TUNING, state, clock(0.0, 4096))

    held, _ = decide(kv_bound, 864)
    assert held.reason is Reason.BATCH_SIZE_UNSATURATED
    assert held.value == 864
    full = sig(0.05, 800.0, waiting=60.0, tokens_per_s=4000.0)
    grown, _ = decide(full, 864)
    assert grown.reason is Reason.BATCH_SIZE_INCREASE
    assert grown.value > 864


# --- the slow path is unchanged --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(case=cases)
def test_property_the_slow_path_ignores_the_settle_memory(case: Case) -> None:
    settled_memory = replace(
        case.state,
        last_change_s=0.0,
        last_change_from_seqs=64,
        last_change_to_seqs=32,
        settled_ewma_itl_s=5.0,
    )
    plain, plain_state = case.decide()
    verdict, new_state = decide_local(
        case.signals, case.applied, case.slo_s, case.bounds, case.tuning, settled_memory
    )
    assert verdict == plain
    assert verdict.reason is not Reason.BATCH_SIZE_SETTLING
    fields = ("last_change_s", "last_change_from_seqs", "last_change_to_seqs")
    assert replace(new_state, **dict.fromkeys(fields), settled_ewma_itl_s=None) == replace(
        plain_state, **dict.fromkeys(fields), settled_ewma_itl_s=None
    )


# --- the policy reads its windows from the pool ----------------------------------------------


def test_the_settle_windows_come_from_the_pools_prometheus_settings() -> None:
    spec = LLMServingPoolSpec.model_validate(
        {
            "model": "m",
            "template": {"image": "vllm/vllm-openai:v0.11.0"},
            "prometheus": {"url": "http://prom:9090", "windowS": 120, "scrapeIntervalS": 30},
        }
    )
    at = SignalClock.of(0.0, spec.to_tuning(), 64)
    assert (at.rate_window_s, at.itl_window_s) == (120.0, 60.0)
    defaults = SignalClock.of(0.0, PoolTuning(), 64)
    assert (defaults.rate_window_s, defaults.itl_window_s) == (60.0, 30.0)
    scenario = load_scenario("llama70b-tp4")
    tuning = scenario.tuning()
    assert tuning.rate_window_s == scenario.simulation.window_s
    assert tuning.scrape_interval_s == scenario.simulation.scrape_interval_s


def test_the_policy_settles_only_with_the_gateway() -> None:
    """End to end through `chiron.decide`: a fluid pool whose 64 sequences break the SLO."""

    def run(tuning: PoolTuning) -> list[tuple[int, str]]:
        pool = FluidPool(
            interactive_load_seqs=200.0,
            itl_per_seq_s=0.003,
            replicas={Role.INTERACTIVE: 2, Role.MIXED: 0, Role.BATCH: 0},
            max_num_seqs={Role.INTERACTIVE: 64, Role.MIXED: 64, Role.BATCH: 256},
        )
        state, out = chiron.initial_state(), []
        for tick in range(4):
            decision, state = chiron.decide(pool.snapshot(tick * TICK_S), tuning, state)
            role = decision.roles[Role.INTERACTIVE]
            if tuning.fast_path:
                pool.gateway_caps[Role.INTERACTIVE] = role.target_max_num_seqs
            out.append((role.target_max_num_seqs, role.max_num_seqs.message))
        return out

    # The gateway's first cap is the role's initial batch size: 64 here, what the pods run.
    bounds = {**PoolTuning().bounds, Role.INTERACTIVE: RoleBounds(initial_batch_size_seqs=64)}
    fast = run(PoolTuning(fast_path=True, bounds=bounds))
    # 64 -> 32 at once; the EWMA still carries 64 (183 ms), but 32 has not been measured
    # alone yet (samples 5 s old, 30 s windows): it holds, then halves on 32's own 116 ms.
    assert [t for t, _ in fast] == [32, 32, 32, 16]
    assert all("settling: the last change (64 -> 32)" in m for _, m in fast[1:3])
    assert "ITL EWMA at 32 alone 116 ms" in fast[3][1]
    slow = run(PoolTuning(bounds=bounds))
    # Without the gateway the pods run 64 until the restart layer lets a restart through:
    # every tick judges 64 again, and nothing settles.
    assert [t for t, _ in slow] == [32, 32, 32, 32]
    assert not any("settling" in m for _, m in slow)
