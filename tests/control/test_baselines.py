"""Baselines: hand-computed formulas, KPA panic, Llumnix thresholds, and properties every
baseline must share (bounds, no scale-down on stale data, settling, monotonicity, wire state)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.control.baselines import (
    BASELINES,
    BaselineParams,
    build_baseline,
    hpa,
    keda,
    kpa,
    llumnix,
    static,
)
from chiron_operator.control.baselines.hpa import hpa_replicas
from chiron_operator.control.baselines.llumnix import freeness
from chiron_operator.control.baselines.tuning import (
    HpaTuning,
    KedaTuning,
    KpaTuning,
    LlumnixTuning,
    StaticTuning,
)
from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.decision import PoolDecision
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, RoleSnapshot
from chiron_operator.core.state import from_wire, to_wire
from chiron_operator.core.tuning import RoleBounds

ROLE = Role.MIXED
CAP_SEQS = 64


def pods(
    count: int,
    *,
    running: float = 10.0,
    waiting: float = 0.0,
    kv: float = 0.5,
    age_s: float = 5.0,
    starting: int = 0,
) -> tuple[PodSignals, ...]:
    """`count` identical ready pods, then `starting` unready ones without signals."""
    signals = {"kv_cache_usage_ratio": kv, "sample_age_s": age_s}
    ready = [
        PodSignals(f"m-{i}", ROLE, True, CAP_SEQS, running, waiting, **signals)
        for i in range(count)
    ]
    unready = [PodSignals(f"s-{i}", ROLE, False, CAP_SEQS) for i in range(starting)]
    return (*ready, *unready)


def pool(
    ready: int,
    *,
    starting: int = 0,
    now_s: float = 1000.0,
    age_s: float = 5.0,
    members: tuple[PodSignals, ...] | None = None,
    **signals: float,
) -> PoolSnapshot:
    """A one-role pool of `ready` identical pods (plus `starting` unready ones)."""
    if members is None:
        members = pods(ready, starting=starting, age_s=age_s, **signals)
    replicas = ready + starting
    role = RoleSnapshot(ROLE, replicas, ready, starting, CAP_SEQS, members)
    return PoolSnapshot(now_s, {ROLE: role}, metrics_age_s=age_s)


def wide(max_replicas: int = 16, min_replicas: int = 1) -> dict[Role, RoleBounds]:
    return {ROLE: RoleBounds(min_replicas=min_replicas, max_replicas=max_replicas)}


# --- HPA -------------------------------------------------------------------------------------


HPA_CASES = [
    # (current, usages, unsampled ready pods, starting pods, target, expected, reason)
    (4, [0.9] * 4, 0, 0, 0.7, 6, Reason.TARGET_TRACKING),  # ceil(4 x 0.9/0.7) = ceil(5.14)
    (4, [0.75] * 4, 0, 0, 0.7, 4, Reason.WITHIN_TOLERANCE),  # 1.07: within 10%
    (4, [0.65] * 4, 0, 0, 0.7, 4, Reason.WITHIN_TOLERANCE),  # 0.93: within 10%
    (4, [0.7] * 4, 0, 0, 0.7, 4, Reason.WITHIN_TOLERANCE),  # exactly on target
    (4, [0.35] * 4, 0, 0, 0.7, 2, Reason.TARGET_TRACKING),  # ceil(4 x 0.5)
    # Unsampled pods on a scale-down count as at target: (0.35+0.35+0.7+0.7)/4/0.7 = 0.75.
    (4, [0.35] * 2, 2, 0, 0.7, 3, Reason.TARGET_TRACKING),
    # Unsampled pods on a scale-up count as idle: 2 x 1.0/4/0.7 = 0.71 flips the direction.
    (4, [1.0] * 2, 2, 0, 0.7, 4, Reason.WITHIN_TOLERANCE),
    # Starting pods count as idle on a scale-up: 4 x 0.9/6/0.7 = 0.86 flips it: hold.
    (6, [0.9] * 4, 0, 2, 0.7, 6, Reason.WITHIN_TOLERANCE),
    # Heavy load survives the fill-in: 4 x 1.0/6/0.5 = 1.33 -> ceil(1.33 x 6) = 8.
    (6, [1.0] * 4, 0, 2, 0.5, 8, Reason.TARGET_TRACKING),
]


@pytest.mark.parametrize("case", HPA_CASES)
def test_hpa_formula(case: tuple[int, list[float], int, int, float, int, Reason]) -> None:
    current, usages, missing, unready, target, expected, reason = case
    value, found, message = hpa_replicas(
        current, usages, missing, unready, target=target, tolerance=0.1
    )
    assert (value, found) == (expected, reason), message


def test_hpa_decides_six_for_four_pods_at_ninety_percent() -> None:
    policy = hpa.bound(HpaTuning(bounds=wide()))
    decision, _ = policy.step(pool(4, kv=0.9), policy.initial_state)
    assert decision.replicas(ROLE) == 6
    assert decision.roles[ROLE].replicas.reason is Reason.TARGET_TRACKING
    assert decision.observations["mixed_kv_usage_ratio"] == pytest.approx(0.9)


def test_hpa_scale_up_is_at_most_four_pods_or_double() -> None:
    policy = hpa.bound(HpaTuning(bounds=wide(64), target_kv_usage_ratio=0.05))
    small, _ = policy.step(pool(2, kv=1.0), policy.initial_state)  # wants 40: max(2+4, 4) = 6
    large, _ = policy.step(pool(10, kv=1.0), policy.initial_state)  # wants 200: max(14, 20)
    assert (small.replicas(ROLE), large.replicas(ROLE)) == (6, 20)
    assert small.roles[ROLE].replicas.reason is Reason.MAX_STEP_LIMITED


def test_hpa_scale_down_waits_for_the_300_s_stabilisation() -> None:
    policy = hpa.bound(HpaTuning(bounds=wide()))
    state = policy.initial_state
    values = []
    for tick in range(30):
        decision, state = policy.step(pool(6, kv=0.2, now_s=tick * 15.0), state)
        values.append(decision.replicas(ROLE))
    assert values[:20] == [6] * 20  # t < 300 s: the initial size is still in the window
    assert values[20] == 2  # HPA's default scale-down policy may drop 100% at once


# --- KEDA ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "waiting", "expected", "reason"),
    [
        (4, 10.0, 8, Reason.TARGET_TRACKING),  # ceil(40 / 5)
        (4, 5.0, 4, Reason.WITHIN_TOLERANCE),  # 20 / (5 x 4) = 1
        (4, 5.4, 4, Reason.WITHIN_TOLERANCE),  # 21.6 / 20 = 1.08
        (4, 2.0, 2, Reason.TARGET_TRACKING),  # ceil(8 / 5)
        (4, 0.0, 1, Reason.TARGET_TRACKING),  # idle: min
        (1, 30.0, 5, Reason.MAX_STEP_LIMITED),  # wants 6, HPA allows max(1+4, 2)
    ],
)
def test_keda_queue_formula(ready: int, waiting: float, expected: int, reason: Reason) -> None:
    verdict, _ = keda.propose(pool(ready, waiting=waiting), ROLE, KedaTuning(bounds=wide()))
    assert (verdict.value, verdict.reason) == (expected, reason), verdict.message


def test_keda_extrapolates_a_partial_scrape() -> None:
    unsampled = PodSignals("m-3", ROLE, True, CAP_SEQS, sample_age_s=5.0)
    members = (*pods(3, waiting=10.0), unsampled)
    verdict, total = keda.propose(pool(4, members=members), ROLE, KedaTuning(bounds=wide()))
    assert total == pytest.approx(40.0)
    assert verdict.value == 8


def test_keda_activation_threshold_keeps_a_trickle_idle() -> None:
    tuning = KedaTuning(bounds=wide(), activation_waiting_requests=4.0)
    verdict, _ = keda.propose(pool(3, waiting=1.0), ROLE, tuning)
    assert verdict.value == 1 and "idle" in verdict.message


# --- KPA -------------------------------------------------------------------------------------


def test_kpa_panics_on_a_3x_burst_and_never_scales_down_in_panic() -> None:
    tuning = KpaTuning(bounds=wide(32))
    policy = kpa.bound(tuning)
    plant = Plant(128.0, 0.0, 2.0, replicas=[0] * 4, start_ticks=0)  # 4 pods at target 32
    tick_s, state = 2.0, policy.initial_state
    for tick in range(40):  # 80 s of steady load: settled at 4, no panic
        decision, state = step(policy, plant, tick, tick_s, state)
    assert decision.replicas(ROLE) == 4
    assert decision.roles[ROLE].replicas.reason is Reason.TARGET_TRACKING

    plant.running_total = 3 * 128.0  # a 3x burst
    decision, state = step(policy, plant, 40, tick_s, state)
    # Panic window (6 s): (128 + 128 + 384)/3 = 213 -> 7 pods < 2 x 4; stable still low.
    burst = [decision]
    for tick in range(41, 44):
        decision, state = step(policy, plant, tick, tick_s, state)
        burst.append(decision)
    assert any(d.roles[ROLE].replicas.reason is Reason.PANIC_MODE for d in burst)
    assert decision.replicas(ROLE) == 12  # 384 / 32

    plant.running_total = 128.0  # the burst ends: panic holds the size for a stable window
    during: list[int] = []
    after: list[int] = []
    for tick in range(44, 44 + 60):
        decision, state = step(policy, plant, tick, tick_s, state)
        in_panic = decision.roles[ROLE].replicas.reason is Reason.PANIC_MODE
        (during if in_panic else after).append(decision.replicas(ROLE))
    assert during and all(v >= 12 for v in during)
    assert after and after[-1] == 4


def test_kpa_window_lives_in_frozen_pruned_state() -> None:
    policy = kpa.bound(KpaTuning(bounds=wide()))
    state = policy.initial_state
    for tick in range(100):
        _, state = policy.step(pool(4, running=30.0, now_s=tick * 1.0), state)
    samples = state.roles[ROLE].samples
    assert len(samples) == 60  # the 60 s stable window at 1 s ticks
    assert from_wire(type(state), to_wire(state)) == state


# --- Llumnix ---------------------------------------------------------------------------------

SMALL_KV = LlumnixTuning(bounds=wide(), kv_capacity_blocks=1000)


@pytest.mark.parametrize(
    ("kv", "running", "expected", "reason"),
    [
        (0.99, 2.0, 3, Reason.FREENESS_LOW),  # 2 x 10 free blocks / 4 requests = 5 < 10
        (0.1, 5.0, 1, Reason.FREENESS_HIGH),  # 1800 / 10 = 180; without one 800/10 = 80 > 60
        (0.5, 10.0, 2, Reason.FREENESS_IN_BAND),  # 1000 / 20 = 50; without one 0
        (0.7, 10.0, 2, Reason.FREENESS_IN_BAND),  # 600 / 20 = 30
        (0.0, 0.0, 1, Reason.FREENESS_HIGH),  # idle: infinitely free
    ],
)
def test_llumnix_thresholds(kv: float, running: float, expected: int, reason: Reason) -> None:
    verdict, _ = llumnix.propose(pool(2, kv=kv, running=running), ROLE, SMALL_KV)
    assert (verdict.value, verdict.reason) == (expected, reason), verdict.message


def test_llumnix_freeness_units() -> None:
    seen = freeness(list(pods(2, kv=0.75, running=3.0, waiting=2.0)), 2000)
    assert seen.free_blocks == pytest.approx(1000.0)
    assert seen.now_blocks_per_request == pytest.approx(100.0)
    assert seen.without_one_blocks_per_request == 0.0


def test_llumnix_checks_every_interval_and_waits_for_every_instance() -> None:
    policy = llumnix.bound(SMALL_KV)
    first, state = policy.step(pool(2, now_s=0.0, kv=0.99, running=2.0), policy.initial_state)
    early, state = policy.step(pool(3, now_s=5.0, kv=0.99, running=2.0), state)
    assert (first.replicas(ROLE), early.replicas(ROLE)) == (3, 3)
    assert early.roles[ROLE].replicas.reason is Reason.NO_CHANGE
    starting, _ = policy.step(pool(2, starting=1, now_s=10.0, kv=0.99, running=2.0), state)
    assert starting.roles[ROLE].replicas.reason is Reason.PENDING_CAPACITY
    assert starting.replicas(ROLE) == 3


def test_llumnix_tuned_is_the_same_policy_with_swept_thresholds() -> None:
    tuned = llumnix.bound_tuned(60.0, 200.0, SMALL_KV)
    assert tuned.name == "llumnix-tuned"
    decision, _ = tuned.step(pool(2, kv=0.5, running=10.0), tuned.initial_state)  # freeness 50
    assert decision.roles[ROLE].replicas.reason is Reason.FREENESS_LOW


# --- static ----------------------------------------------------------------------------------


def test_static_provisions_peak_unless_told() -> None:
    peak = static.bound(StaticTuning(bounds=wide(6)))
    fixed = static.bound(StaticTuning(bounds=wide(6), replicas={ROLE: 3}))
    assert peak.step(pool(1), peak.initial_state)[0].replicas(ROLE) == 6
    decision, _ = fixed.step(pool(1), fixed.initial_state)
    assert decision.replicas(ROLE) == 3
    assert decision.roles[ROLE].max_num_seqs.reason is Reason.STATIC


# --- a steady plant and properties shared by every baseline ----------------------------------


@dataclass
class Plant:
    """Conserved load spread evenly over the ready pods: per pod = total / ready.

    Not a queueing model: a steady offered load whose per-pod signals respond to the replica
    count, which is what settling and monotonicity are about. Pods become ready `start_ticks`
    after they are asked for; a scale-down removes unready pods first, as a ReplicaSet does.
    """

    running_total: float = 100.0
    waiting_total: float = 10.0
    kv_total: float = 2.5  # KV demand in whole instances' worth of cache
    replicas: list[int] = field(default_factory=lambda: [0])  # tick each pod is ready at
    start_ticks: int = 2
    age_s: float = 5.0

    def snapshot(self, tick: int, now_s: float) -> PoolSnapshot:
        ready = sum(1 for at in self.replicas if at <= tick)
        share = 1.0 / ready if ready else 0.0
        members = pods(
            ready,
            running=self.running_total * share,
            waiting=self.waiting_total * share,
            kv=min(1.0, self.kv_total * share),
            age_s=self.age_s,
            starting=len(self.replicas) - ready,
        )
        role = RoleSnapshot(
            ROLE, len(self.replicas), ready, len(self.replicas) - ready, CAP_SEQS, members
        )
        return PoolSnapshot(now_s, {ROLE: role}, metrics_age_s=self.age_s)

    def apply(self, replicas: int, tick: int) -> None:
        kept = sorted(self.replicas)[:replicas]
        self.replicas = kept + [tick + self.start_ticks] * (replicas - len(kept))


def step(
    policy: BoundPolicy[Any, Any], plant: Plant, tick: int, tick_s: float, state: Any
) -> tuple[PoolDecision, Any]:
    decision, state = policy.step(plant.snapshot(tick, tick * tick_s), state)
    plant.apply(decision.replicas(ROLE), tick)
    return decision, state


Factory = Callable[[dict[Role, RoleBounds]], BoundPolicy[Any, Any]]
FACTORIES: dict[str, Factory] = {
    "static": lambda b: static.bound(StaticTuning(bounds=b)),
    "hpa": lambda b: hpa.bound(HpaTuning(bounds=b)),
    "keda": lambda b: keda.bound(KedaTuning(bounds=b)),
    "kpa": lambda b: kpa.bound(KpaTuning(bounds=b)),
    "llumnix": lambda b: llumnix.bound(LlumnixTuning(bounds=b)),
    "llumnix-tuned": lambda b: llumnix.bound_tuned(30.0, 120.0, LlumnixTuning(bounds=b)),
}
names = pytest.mark.parametrize("name", sorted(FACTORIES))


def test_the_registry_holds_every_baseline() -> None:
    assert set(BASELINES) == set(FACTORIES)


@names
def test_the_registry_builds_what_the_module_builds(name: str) -> None:
    bounds = wide(12)
    built = build_baseline(name, BaselineParams(bounds=bounds, freeness_blocks=(30.0, 120.0)))
    expected = FACTORIES[name](bounds)
    assert (built.name, built.tuning) == (expected.name, expected.tuning)


def test_the_registry_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="freeness_blocks"):
        build_baseline("llumnix-tuned", BaselineParams(bounds=wide(4)))
    with pytest.raises(ValueError, match="known: static, hpa"):
        build_baseline("nope", BaselineParams(bounds=wide(4)))


@names
@pytest.mark.parametrize(
    ("running", "waiting", "kv"), [(60.0, 4.0, 0.8), (150.0, 20.0, 3.3), (400.0, 60.0, 6.5)]
)
def test_constant_load_settles_and_stays(
    name: str, running: float, waiting: float, kv: float
) -> None:
    policy = FACTORIES[name](wide(12))
    plant = Plant(running, waiting, kv)
    state, history = policy.initial_state, []
    for tick in range(200):
        decision, state = step(policy, plant, tick, 10.0, state)
        history.append(decision.replicas(ROLE))
    assert len(set(history[-100:])) == 1, f"{name} still moving: {history[-100:]}"


@names
def test_no_scale_down_on_stale_metrics(name: str) -> None:
    policy = FACTORIES[name](wide(12))
    plant = Plant(running_total=1.0, waiting_total=0.0, kv_total=0.1, replicas=[0] * 6)
    plant.age_s = 10 * 60.0
    state = policy.initial_state
    for tick in range(40):
        decision, state = step(policy, plant, tick, 10.0, state)
        assert decision.replicas(ROLE) >= 6
        assert decision.roles[ROLE].replicas.reason is Reason.METRICS_STALE


bounds_st = st.builds(
    lambda low, span: {ROLE: RoleBounds(min_replicas=low, max_replicas=low + span)},
    st.integers(0, 3),
    st.integers(1, 8),
)


@names
@settings(max_examples=30, deadline=None)
@given(
    bounds=bounds_st,
    start=st.integers(0, 12),
    load=st.floats(0.0, 8.0),
    age_s=st.sampled_from([5.0, 500.0]),
)
def test_outputs_within_bounds(
    name: str, bounds: dict[Role, RoleBounds], start: int, load: float, age_s: float
) -> None:
    policy = FACTORIES[name](bounds)
    plant = Plant(64.0 * load, 8.0 * load, load, replicas=[0] * start, age_s=age_s)
    state = policy.initial_state
    for tick in range(6):
        decision, state = step(policy, plant, tick, 10.0, state)
        value = decision.replicas(ROLE)
        assert bounds[ROLE].min_replicas <= value <= bounds[ROLE].max_replicas
        assert decision.roles[ROLE].replicas.message


def _unstabilised(policy: BoundPolicy[Any, Any]) -> BoundPolicy[Any, Any]:
    guards = dataclasses.replace(policy.tuning.guards, scale_down_stabilization_s=0.0)
    return dataclasses.replace(policy, tuning=dataclasses.replace(policy.tuning, guards=guards))


@names
@pytest.mark.parametrize("stabilised", [True, False])
@settings(max_examples=40, deadline=None)
@given(
    ready=st.integers(1, 10),
    low=st.floats(0.0, 1.5),
    extra=st.floats(0.0, 1.5),
)
def test_more_load_never_yields_fewer_replicas(
    name: str, stabilised: bool, ready: int, low: float, extra: float
) -> None:
    policy = FACTORIES[name](wide(32, min_replicas=0))
    if not stabilised:
        policy = _unstabilised(policy)

    def replicas(load: float) -> int:
        snap = pool(ready, running=48.0 * load, waiting=6.0 * load, kv=min(1.0, load))
        decision, _ = policy.step(snap, policy.initial_state)
        return decision.replicas(ROLE)

    assert replicas(low + extra) >= replicas(low)


@names
def test_state_round_trips_through_the_wire(name: str) -> None:
    policy = FACTORIES[name](wide(12))
    plant = Plant(150.0, 20.0, 3.3)
    state = policy.initial_state
    for tick in range(30):
        _, state = step(policy, plant, tick, 10.0, state)
    assert from_wire(type(state), to_wire(state)) == state


@names
def test_batch_size_stays_at_the_initial_value(name: str) -> None:
    policy = FACTORIES[name](wide(12))
    decision, _ = policy.step(pool(3), policy.initial_state)
    role = decision.roles[ROLE]
    assert role.max_num_seqs.value == role.target_max_num_seqs == 64
    assert role.max_num_seqs.reason is Reason.STATIC


def test_roles_without_room_are_not_scaled() -> None:
    bounds = {ROLE: RoleBounds(max_replicas=4), Role.BATCH: RoleBounds(max_replicas=0)}
    decision, _ = hpa.bound(HpaTuning(bounds=bounds)).step(pool(2), hpa.bound().initial_state)
    assert set(decision.roles) == {ROLE}
    assert math.isfinite(decision.observations["mixed_kv_usage_ratio"])
