"""Chiron's global autoscaler: rule tables, a draining-backlog scenario, and properties."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.control.global_scaling import busy_share, decide_global
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import (
    NAN,
    BatchGroup,
    BatchQueue,
    PodSignals,
    PoolSnapshot,
    RoleSnapshot,
)
from chiron_operator.core.state import GlobalState
from chiron_operator.core.tuning import PoolTuning, RoleBounds

NOW_S = 10_000.0
# The knobs the rule tables below are worked out for (a busy level of 0.6 of the cap, the band
# 0.2 to 0.8), pinned so that a sweep moving the defaults does not change what they check.
TUNING = PoolTuning(
    global_scaling=replace(
        PoolTuning().global_scaling, busy_running_ratio=0.6, ibp_low_ratio=0.2, ibp_high_ratio=0.8
    )
)
EMPTY_QUEUE = BatchQueue((), 300.0, 250.0, 1.0)


def pod(
    role: Role,
    running: float,
    waiting: float = 0.0,
    *,
    interactive: float | None = None,
    interactive_waiting: float | None = None,
    cap: int = 32,
    tokens_per_s: float = NAN,
    age_s: float = 5.0,
    ready: bool = True,
) -> PodSignals:
    """A pod; `interactive=None` means the source cannot split its load by class."""
    return PodSignals(
        name=f"{role.value}-pod",
        role=role,
        ready=ready,
        max_num_seqs=cap,
        running_requests=running,
        waiting_requests=waiting,
        interactive_running_requests=NAN if interactive is None else interactive,
        interactive_waiting_requests=NAN if interactive_waiting is None else interactive_waiting,
        generation_tokens_per_s=tokens_per_s,
        sample_age_s=age_s,
    )


def batch_pod(tokens_per_s: float, running: float = 256.0) -> PodSignals:
    return pod(Role.BATCH, running, interactive=0.0, cap=256, tokens_per_s=tokens_per_s)


def snapshot(
    pods: list[PodSignals],
    batch_queue: BatchQueue = EMPTY_QUEUE,
    replicas: Mapping[Role, int] | None = None,
    now_s: float = NOW_S,
) -> PoolSnapshot:
    """Replicas default to the pods listed per role, all ready."""
    roles = {}
    for role in Role:
        own = tuple(p for p in pods if p.role is role)
        count = len(own) if replicas is None or role not in replicas else replicas[role]
        ready = sum(1 for p in own if p.ready)
        roles[role] = RoleSnapshot(role, count, ready, count - ready, 64, own)
    return PoolSnapshot(now_s, roles, batch_queue, metrics_age_s=5.0)


def backlog(*groups: tuple[float, int], mean: float = 300.0, std: float = 0.0) -> BatchQueue:
    """Groups as (seconds until the deadline, queued requests)."""
    return BatchQueue(tuple(BatchGroup(NOW_S + d, n) for d, n in groups), mean, std, 2.0)


def decide(
    snap: PoolSnapshot, tuning: PoolTuning = TUNING, state: GlobalState | None = None
) -> tuple[dict[Role, Verdict], dict[str, float], GlobalState]:
    return decide_global(snap, tuning, state or GlobalState())


def with_global(**changes: float) -> PoolTuning:
    return PoolTuning(global_scaling=replace(TUNING.global_scaling, **changes))


# The band the rule tables are worked out for (0.3 to 0.8, middle 0.55), pinned so that a sweep
# moving the default band does not change what they check; test_scale_in documents the default.
BAND_TUNING = with_global(ibp_low_ratio=0.3, ibp_high_ratio=0.8)


def idle(role: Role, count: int) -> list[PodSignals]:
    return [pod(role, 2.0, interactive=2.0) for _ in range(count)]


def busy(role: Role, count: int) -> list[PodSignals]:
    return [pod(role, 30.0, interactive=30.0) for _ in range(count)]


def at_level(role: Role, count: int) -> list[PodSignals]:
    """Pods exactly at the busy level (0.6 of 32 running): one busy instance each."""
    return [pod(role, 19.2, interactive=19.2) for _ in range(count)]


def unloaded(role: Role, count: int) -> list[PodSignals]:
    return [pod(role, 0.0, interactive=0.0) for _ in range(count)]


# Busy shares at the default busy level (0.6 of a 32-sequence cap, 19.2 running).
IDLE_SHARE = 2.0 / 19.2
BUSY_SHARE = 30.0 / 19.2


# --- interactive backpressure -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pods", "expected", "busy_instances", "reason"),
    [
        # 4 at the level: IBP 1.0 > 0.8; ceil(4 / 0.55) = 8 instances, so add 4 mixed.
        (
            at_level(Role.INTERACTIVE, 4),
            {Role.INTERACTIVE: 4, Role.MIXED: 4},
            4.0,
            Reason.INTERACTIVE_BACKPRESSURE_HIGH,
        ),
        # The same 4 pods further past the level weigh more: 6.25 busy, ceil(11.4) = 12, add 8.
        (
            busy(Role.INTERACTIVE, 4),
            {Role.INTERACTIVE: 4, Role.MIXED: 8},
            4 * BUSY_SHARE,
            Reason.INTERACTIVE_BACKPRESSURE_HIGH,
        ),
        # 9 busy and 1 idle: 14.2 busy of 10, ceil(25.8) = 26 instances, add 16 to the 2 mixed.
        (
            busy(Role.INTERACTIVE, 7) + busy(Role.MIXED, 2) + idle(Role.INTERACTIVE, 1),
            {Role.INTERACTIVE: 8, Role.MIXED: 18},
            9 * BUSY_SHARE + IDLE_SHARE,
            Reason.INTERACTIVE_BACKPRESSURE_HIGH,
        ),
        # 5 at the level and 1 idle: 5.1 of 6 = 0.85, just above; ceil(9.3) = 10, add 4 mixed.
        (
            at_level(Role.INTERACTIVE, 5) + idle(Role.INTERACTIVE, 1),
            {Role.INTERACTIVE: 6, Role.MIXED: 4},
            5 + IDLE_SHARE,
            Reason.INTERACTIVE_BACKPRESSURE_HIGH,
        ),
        # 1 at the level and 5 idle: 1.52 of 6 = 0.25 < 0.3; ceil(1.52 / 0.55) = 3 carry it,
        # so the 3 others go at once.
        (
            at_level(Role.INTERACTIVE, 1) + idle(Role.INTERACTIVE, 5),
            {Role.INTERACTIVE: 3, Role.MIXED: 0},
            1 + 5 * IDLE_SHARE,
            Reason.INTERACTIVE_BACKPRESSURE_LOW,
        ),
        # 3 at the level and an idle mixed: 3.1 of 4 = 0.78, in band.
        (
            at_level(Role.INTERACTIVE, 3) + idle(Role.MIXED, 1),
            {Role.INTERACTIVE: 3, Role.MIXED: 1},
            3 + IDLE_SHARE,
            Reason.INTERACTIVE_BACKPRESSURE_IN_BAND,
        ),
        # Exactly on the edges counts as in band: 4 of 5 = 0.8 and 3 of 10 = 0.3.
        (
            at_level(Role.INTERACTIVE, 4) + unloaded(Role.INTERACTIVE, 1),
            {Role.INTERACTIVE: 5, Role.MIXED: 0},
            4.0,
            Reason.INTERACTIVE_BACKPRESSURE_IN_BAND,
        ),
        (
            at_level(Role.INTERACTIVE, 3) + unloaded(Role.INTERACTIVE, 7),
            {Role.INTERACTIVE: 10, Role.MIXED: 0},
            3.0,
            Reason.INTERACTIVE_BACKPRESSURE_IN_BAND,
        ),
    ],
)
def test_interactive_band(
    pods: list[PodSignals], expected: dict[Role, int], busy_instances: float, reason: Reason
) -> None:
    proposals, observations, _ = decide(snapshot(pods), BAND_TUNING)
    assert {r: proposals[r].value for r in expected} == expected
    assert {proposals[r].reason for r in expected} == {reason}
    assert observations["busy_instances"] == pytest.approx(busy_instances)
    assert observations["interactive_backpressure_ratio"] == pytest.approx(
        busy_instances / len(pods)
    )


def test_high_backpressure_message_carries_the_numbers() -> None:
    proposals, _, _ = decide(snapshot(at_level(Role.INTERACTIVE, 4)), BAND_TUNING)
    message = proposals[Role.MIXED].message
    assert "interactive backpressure 1.00 > 0.80 (4.0 of 4 instances busy)" in message
    assert "add 4 mixed (to reach 0.55)" in message


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        # Batch fills it, the split is known: only its 10 interactive count, of 0.6 x 64.
        (pod(Role.MIXED, 60.0, cap=64, interactive=10.0), 10.0 / 38.4),
        (pod(Role.MIXED, 60.0, cap=64), 60.0 / 38.4),  # same load, no split: count it all
        (
            pod(Role.MIXED, 10.0, 5.0, cap=64, interactive=10.0, interactive_waiting=0.0),
            10.0 / 38.4,
        ),
        (pod(Role.MIXED, 10.0, 5.0, cap=64), 1.0),  # waiting requests of unknown class
        (pod(Role.INTERACTIVE, 4.0, interactive=4.0, interactive_waiting=1.0), 1.0),
        # Waiting requests raise a share to 1, not lower one already above it.
        (pod(Role.INTERACTIVE, 30.0, 2.0, interactive=30.0, interactive_waiting=2.0), 30 / 19.2),
        (pod(Role.INTERACTIVE, 19.2, interactive=19.2), 1.0),  # exactly 0.6 of 32
        (pod(Role.INTERACTIVE, 19.0, interactive=19.0), 19.0 / 19.2),  # just below: counts less
        (pod(Role.INTERACTIVE, 32.0, interactive=32.0), 1 / 0.6),  # at its cap
        (pod(Role.INTERACTIVE, 40.0, interactive=40.0), 1 / 0.6),  # never more than at its cap
        (pod(Role.INTERACTIVE, 0.0, interactive=0.0), 0.0),
        (pod(Role.INTERACTIVE, NAN, NAN), None),  # no load signal at all
    ],
)
def test_busy_share(signals: PodSignals, expected: float | None) -> None:
    share = busy_share(signals, TUNING.global_scaling.busy_running_ratio)
    assert share == (None if expected is None else pytest.approx(expected))


def test_unsplit_mixed_load_raises_backpressure() -> None:
    split = [pod(Role.MIXED, 60.0, cap=64, interactive=5.0) for _ in range(4)]
    unsplit = [replace(p, interactive_running_requests=NAN) for p in split]
    low, _, _ = decide(snapshot(split, replicas={Role.INTERACTIVE: 1}))
    high, _, _ = decide(snapshot(unsplit, replicas={Role.INTERACTIVE: 1}))
    assert low[Role.INTERACTIVE].reason is Reason.INTERACTIVE_BACKPRESSURE_LOW
    assert high[Role.MIXED].reason is Reason.INTERACTIVE_BACKPRESSURE_HIGH
    assert high[Role.MIXED].value > 4


@pytest.mark.parametrize(
    "pods",
    [
        [],
        [
            replace(p, sample_age_s=TUNING.guards.metrics_staleness_s + 1)
            for p in busy(Role.MIXED, 3)
        ],
        [replace(p, ready=False) for p in idle(Role.INTERACTIVE, 3)],
        [pod(Role.INTERACTIVE, NAN, NAN)],
    ],
)
def test_no_fresh_pod_holds_current_replicas(pods: list[PodSignals]) -> None:
    replicas = {Role.INTERACTIVE: 3, Role.MIXED: 2, Role.BATCH: 0}
    proposals, observations, _ = decide(snapshot(pods, replicas=replicas))
    for role in (Role.INTERACTIVE, Role.MIXED):
        assert proposals[role].value == replicas[role]
        assert proposals[role].reason is Reason.METRICS_MISSING
    assert math.isnan(observations["interactive_backpressure_ratio"])


def test_stale_and_unready_pods_are_left_out_of_the_ratio() -> None:
    stale = replace(busy(Role.INTERACTIVE, 1)[0], sample_age_s=1e6)
    starting = replace(busy(Role.INTERACTIVE, 1)[0], ready=False)
    pods = [*idle(Role.INTERACTIVE, 3), *busy(Role.INTERACTIVE, 1), stale, starting]
    _, observations, _ = decide(snapshot(pods))
    assert observations["interactive_backpressure_ratio"] == pytest.approx(
        (3 * IDLE_SHARE + BUSY_SHARE) / 4
    )


ONE_INTERACTIVE = TUNING.role_bounds(Role.INTERACTIVE).min_replicas


@pytest.mark.parametrize(
    ("mixed_pods", "extra", "queue", "expected_mixed"),
    [
        # Interactive at its min, mixed idle and no batch anywhere: one instance carries the
        # load at the band's middle, so every mixed goes.
        (idle(Role.MIXED, 3), [], EMPTY_QUEUE, 0),
        # Mixed carry interactive load (no batch): 0.73 busy needs 2 instances, remove 2 mixed.
        ([pod(Role.MIXED, 8.0, cap=64, interactive=8.0)] * 3, [], EMPTY_QUEUE, 1),
        # Mixed run batch requests and no batch instance could take them: keep them.
        ([pod(Role.MIXED, 20.0, cap=64, interactive=1.0)] * 3, [], EMPTY_QUEUE, 3),
        # Batch queued and nothing else serves it: keep them.
        (idle(Role.MIXED, 3), [], backlog((3600.0, 10)), 3),
        # Load not split by class and the mixed pods full (their latency fine): it may be
        # batch work filling them, keep them.
        ([replace(pod(Role.MIXED, 60.0, cap=64), ttft_s=0.3, itl_s=0.05)] * 3, [], EMPTY_QUEUE, 3),
        # Load not split by class but the mixed pods mostly idle: batch work fills every free
        # mixed slot while any waits, so there is no backlog behind them; remove them.
        ([pod(Role.MIXED, 2.0, cap=64)] * 3, [], EMPTY_QUEUE, 0),
        # A ready batch instance takes the batch work: remove the mixed.
        (
            [pod(Role.MIXED, 20.0, cap=64, interactive=1.0)] * 3,
            [batch_pod(2000.0)],
            backlog((3600.0, 10)),
            0,
        ),
    ],
)
def test_low_backpressure_at_interactive_min_removes_mixed_only_when_batch_has_a_home(
    mixed_pods: list[PodSignals],
    extra: list[PodSignals],
    queue: BatchQueue,
    expected_mixed: int,
) -> None:
    pods = idle(Role.INTERACTIVE, ONE_INTERACTIVE) + mixed_pods + extra
    proposals, _, _ = decide(snapshot(pods, queue))
    assert proposals[Role.INTERACTIVE].value == ONE_INTERACTIVE
    assert proposals[Role.MIXED].value == expected_mixed
    assert proposals[Role.MIXED].reason is Reason.INTERACTIVE_BACKPRESSURE_LOW


def test_low_backpressure_holds_when_one_fewer_would_flap_high() -> None:
    narrow = with_global(ibp_low_ratio=0.7, ibp_high_ratio=0.8)
    # 2 of 3 = 0.67 < 0.7, but ceil(2 / 0.75) = 3 carry it: 2 of 2 without one would be 1.0.
    pods = at_level(Role.INTERACTIVE, 2) + unloaded(Role.INTERACTIVE, 1)
    proposals, _, _ = decide(snapshot(pods), narrow)
    assert proposals[Role.INTERACTIVE].value == 3
    assert proposals[Role.INTERACTIVE].reason is Reason.INTERACTIVE_BACKPRESSURE_LOW
    assert "(2.0 of 3 instances busy), but all 3 are needed: hold 3" in (
        proposals[Role.INTERACTIVE].message
    )


def test_only_allowed_roles_get_proposals_and_high_adds_interactive_without_mixed() -> None:
    bounds = {Role.INTERACTIVE: RoleBounds(min_replicas=1, max_replicas=8)}
    tuning = PoolTuning(bounds=bounds, global_scaling=BAND_TUNING.global_scaling)
    proposals, _, _ = decide(snapshot(at_level(Role.INTERACTIVE, 2)), tuning)
    assert set(proposals) == {Role.INTERACTIVE}
    assert proposals[Role.INTERACTIVE].value == 4  # ceil(2 / 0.55) = 4
    assert proposals[Role.INTERACTIVE].reason is Reason.INTERACTIVE_BACKPRESSURE_HIGH


def test_every_allowed_role_gets_a_proposal_and_observations_carry_units() -> None:
    proposals, observations, _ = decide(snapshot(idle(Role.INTERACTIVE, 2)))
    assert set(proposals) == set(Role)
    assert {
        "interactive_backpressure_ratio",
        "busy_instances",
        "batch_backpressure_ratio",
        "batch_required_tokens_per_s",
        "batch_throughput_tokens_per_s",
        "batch_worst_slack_s",
        "batch_queued_requests",
    } <= set(observations)


# --- batch backpressure ------------------------------------------------------------------------

# 2400 requests of exactly 300 tokens due in 320 s: 720,000 tokens, 2250 tokens/s needed. A
# batch instance added now is ready after the 120 s startup prior: it works for 200 s.
AT_RISK = backlog((320.0, 2400))
SATURATED_MIXED = pod(Role.MIXED, 64.0, cap=64, interactive=60.0, tokens_per_s=1000.0)


@pytest.mark.parametrize(
    ("pods", "queue", "expected", "reason"),
    [
        # Have 1000 (320,000 tokens by the deadline), 400,000 short; one instance gives 1000
        # tokens/s for 200 s: add 2.
        ([batch_pod(1000.0)], AT_RISK, 3, Reason.BATCH_DEADLINES_AT_RISK),
        # Idle mixed capacity absorbs it first.
        (
            [batch_pod(1000.0), pod(Role.MIXED, 10.0, cap=64, interactive=10.0)],
            AT_RISK,
            1,
            Reason.BATCH_ABSORBED_BY_MIXED,
        ),
        # Full mixed pods give batch 4/64 of their 1000 tokens/s: 1062.5, 380,000 short, add 2.
        ([batch_pod(1000.0), SATURATED_MIXED], AT_RISK, 3, Reason.BATCH_DEADLINES_AT_RISK),
        # Mixed pods that report nothing are not assumed idle.
        (
            [batch_pod(1000.0), replace(SATURATED_MIXED, sample_age_s=1e6)],
            AT_RISK,
            3,
            Reason.BATCH_DEADLINES_AT_RISK,
        ),
        # An overdue group cannot be saved; size for the open one (2405 requests in 320 s:
        # 401,500 tokens short, over 2 instances' 400,000): add 3.
        (
            [batch_pod(1000.0)],
            backlog((-10.0, 5), (320.0, 2400)),
            4,
            Reason.BATCH_DEADLINES_AT_RISK,
        ),
        # 3 x 2000 tokens/s, need 1000 / 0.7 = 1429: two instances still hold, remove one.
        ([batch_pod(2000.0)] * 3, backlog((300.0, 1000)), 2, Reason.BATCH_DEADLINES_SAFE),
        # 4000 covers 2250, but 2000 alone would not: hold.
        ([batch_pod(2000.0)] * 2, AT_RISK, 2, Reason.NO_CHANGE),
        # Empty queue: down to the role's min (0 by default).
        ([batch_pod(2000.0, running=0.0)] * 3, EMPTY_QUEUE, 0, Reason.BATCH_QUEUE_EMPTY),
        # A stale queue sample is missing data: hold.
        (
            [batch_pod(2000.0)] * 3,
            replace(EMPTY_QUEUE, sample_age_s=1e6),
            3,
            Reason.METRICS_MISSING,
        ),
        # Unknown output lengths: the prior's bound (9 x 256 tokens, spread 256 weighed as 4
        # completions: about 5,500 tokens) fits one instance's 2000 tokens/s: remove one.
        (
            [batch_pod(2000.0)] * 2,
            BatchQueue((BatchGroup(NOW_S + 60, 9),), NAN, NAN, 1.0),
            1,
            Reason.BATCH_DEADLINES_SAFE,
        ),
        # ... and with nothing serving batch, the prior puts them at risk: start one (due
        # before it could be ready, so one and no more).
        (
            [],
            BatchQueue((BatchGroup(NOW_S + 60, 9),), NAN, NAN, 1.0),
            1,
            Reason.BATCH_DEADLINES_AT_RISK,
        ),
    ],
)
def test_batch_rules(
    pods: list[PodSignals], queue: BatchQueue, expected: int, reason: Reason
) -> None:
    proposals, _, _ = decide(snapshot(pods, queue))
    assert (proposals[Role.BATCH].value, proposals[Role.BATCH].reason) == (expected, reason)


def test_batch_at_risk_message_and_observations() -> None:
    proposals, observations, _ = decide(snapshot([batch_pod(1000.0), SATURATED_MIXED], AT_RISK))
    assert observations["batch_backpressure_ratio"] == 1.0
    assert observations["batch_required_tokens_per_s"] == pytest.approx(2250.0)
    assert observations["batch_throughput_tokens_per_s"] == pytest.approx(1062.5)
    assert observations["batch_queued_requests"] == 2400.0
    assert observations["batch_worst_slack_s"] < 0
    assert observations["startup_s"] == 120.0
    message = proposals[Role.BATCH].message
    assert "batch backpressure 1.00 > 0.00 (1 of 1 groups at risk" in message
    assert "need 2250 tokens/s, have 1062)" in message  # measured lengths: no prior named
    assert "add 2 batch at 1000 tokens/s each, ready in 120 s" in message


def test_batch_never_removes_below_its_min() -> None:
    bounds = {**TUNING.bounds, Role.BATCH: RoleBounds(min_replicas=1, max_replicas=8)}
    proposals, _, _ = decide(
        snapshot([batch_pod(2000.0)], backlog((3600.0, 1))), PoolTuning(bounds=bounds)
    )
    assert (proposals[Role.BATCH].value, proposals[Role.BATCH].reason) == (1, Reason.NO_CHANGE)


def test_prior_sizes_batch_before_any_observation() -> None:
    # No batch pod yet: Theta 0, 720,000 tokens; one instance at the 2000 tokens/s prior
    # delivers 400,000 in the 200 s it serves before the deadline: add 2.
    proposals, observations, state = decide(snapshot([], AT_RISK))
    assert proposals[Role.BATCH].value == 2
    assert observations["batch_instance_tokens_per_s"] == 2000.0
    assert state.batch_instance_tokens_per_s is None


@pytest.mark.parametrize(
    ("pods", "before", "after"),
    [
        ([batch_pod(2000.0), batch_pod(1000.0)], None, 1500.0),  # first sample taken whole
        ([batch_pod(2000.0)], 1000.0, 1200.0),  # 0.2 * 2000 + 0.8 * 1000
        ([batch_pod(2000.0, running=10.0)], 1000.0, 1000.0),  # unsaturated: measures load
        ([batch_pod(0.0)], 1000.0, 1000.0),  # saturated yet silent: stalled, not slow
        ([replace(batch_pod(3000.0), sample_age_s=1e6)], 1000.0, 1000.0),  # stale
    ],
)
def test_instance_throughput_ewma(
    pods: list[PodSignals], before: float | None, after: float
) -> None:
    _, _, state = decide(snapshot(pods, AT_RISK), state=GlobalState(before))
    assert state.batch_instance_tokens_per_s == pytest.approx(after)


# --- scenario: a batch backlog draining at a fixed per-instance throughput ----------------------


@dataclass
class Clock:
    """The scenario's only time source, handed to every snapshot."""

    now_s: float = 0.0

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@dataclass
class DrainingBacklog:
    """Batch instances drain the earliest-deadline group at a fixed rate each, mean lengths."""

    groups: list[list[float]]  # [deadline_s, queued requests]
    instance_tokens_per_s: float = 2000.0
    mean_tokens: float = 300.0
    std_tokens: float = 250.0
    batch_replicas: int = 1
    finished_s: dict[float, float] = field(default_factory=dict)

    def snapshot(self, now_s: float) -> PoolSnapshot:
        working = any(n > 0 for _, n in self.groups)
        tokens = self.instance_tokens_per_s if working else 0.0
        pods = [batch_pod(tokens, 256.0 if working else 0.0)] * self.batch_replicas
        groups = tuple(BatchGroup(d, math.ceil(n)) for d, n in self.groups if n > 0)
        queue = BatchQueue(groups, self.mean_tokens, self.std_tokens, 1.0)
        return snapshot(pods, queue, now_s=now_s)

    def drain(self, now_s: float, seconds: float) -> None:
        budget = self.batch_replicas * self.instance_tokens_per_s * seconds / self.mean_tokens
        for group in sorted(self.groups):
            done = min(group[1], budget)
            group[1] -= done
            budget -= done
            if group[1] <= 0 and group[0] not in self.finished_s:
                self.finished_s[group[0]] = now_s + seconds


def test_scenario_batch_scales_out_while_at_risk_and_in_once_safe() -> None:
    clock = Clock()
    plant = DrainingBacklog([[1200.0, 10_000], [3600.0, 10_000], [7200.0, 5_000]])
    tuning = PoolTuning()
    state = GlobalState()
    trace = []
    tick_s = 30.0
    while clock.now_s < 9000.0:
        proposals, observations, state = decide_global(plant.snapshot(clock.now_s), tuning, state)
        verdict = proposals[Role.BATCH]
        trace.append((clock.now_s, plant.batch_replicas, verdict, observations))
        plant.batch_replicas = max(0, min(verdict.value, 8))  # the guards' clamp, nothing more
        plant.drain(clock.now_s, tick_s)
        clock.advance(tick_s)
    ups = [(t, b, v, o) for t, b, v, o in trace if v.value > b]
    downs = [(t, b, v, o) for t, b, v, o in trace if v.value < b]
    assert ups and all(v.reason is Reason.BATCH_DEADLINES_AT_RISK for _, _, v, _ in ups)
    assert all(o["batch_backpressure_ratio"] > 0 for _, _, _, o in ups)
    assert any(v.reason is Reason.BATCH_DEADLINES_SAFE for _, _, v, _ in downs)
    assert all(
        v.reason in {Reason.BATCH_DEADLINES_SAFE, Reason.BATCH_QUEUE_EMPTY} for _, _, v, _ in downs
    )
    assert max(t for t, _, _, _ in ups) < min(t for t, _, v, _ in downs), "scaled out after in"
    missed = {d: f for d, f in plant.finished_s.items() if f > d}
    assert len(plant.finished_s) == 3 and not missed, f"deadlines missed: {missed}"
    assert plant.batch_replicas == 0 and trace[-1][2].reason is Reason.BATCH_QUEUE_EMPTY


# --- properties ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """One interactive or mixed pod's load: interactive and batch requests, split known or not."""

    role: Role
    interactive: float
    batch: float
    waiting: float
    split: bool
    tokens_per_s: float

    def pod(self, extra_running: float = 0.0, extra_waiting: float = 0.0) -> PodSignals:
        interactive = self.interactive + extra_running
        waiting = self.waiting + extra_waiting
        return pod(
            self.role,
            interactive + self.batch,
            waiting,
            interactive=interactive if self.split else None,
            interactive_waiting=waiting if self.split else None,
            cap=64,
            tokens_per_s=self.tokens_per_s,
        )


loads = st.builds(
    LoadSpec,
    role=st.sampled_from([Role.INTERACTIVE, Role.MIXED]),
    interactive=st.floats(0.0, 64.0),
    batch=st.floats(0.0, 32.0),
    waiting=st.sampled_from([0.0, 0.0, 3.0]),
    split=st.booleans(),
    tokens_per_s=st.floats(0.0, 5000.0),
)
queues = st.builds(
    lambda groups, mean, std: backlog(*groups, mean=mean, std=std),
    st.lists(st.tuples(st.floats(-100.0, 7200.0), st.integers(0, 20_000)), max_size=3),
    st.floats(1.0, 2000.0),
    st.floats(0.0, 2000.0),
)
batch_pods = st.lists(
    st.builds(batch_pod, st.floats(0.0, 5000.0), st.sampled_from([0.0, 100.0, 256.0])),
    max_size=3,
)
estimates = st.one_of(st.none(), st.floats(1.0, 5000.0))


def total(proposals: Mapping[Role, Verdict]) -> int:
    return sum(v.value for v in proposals.values())


@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(loads, min_size=1, max_size=8),
    extra=st.lists(st.tuples(st.floats(0.0, 64.0), st.sampled_from([0.0, 2.0])), min_size=8),
    queue=queues,
    batch=batch_pods,
    estimate=estimates,
)
def test_more_interactive_load_never_proposes_fewer_replicas(
    specs: list[LoadSpec],
    extra: list[tuple[float, float]],
    queue: BatchQueue,
    batch: list[PodSignals],
    estimate: float | None,
) -> None:
    state = GlobalState(estimate)
    light = [s.pod() for s in specs] + batch
    heavy = [s.pod(run, wait) for s, (run, wait) in zip(specs, extra, strict=False)] + batch
    before, _, _ = decide(snapshot(light, queue), state=state)
    after, _, _ = decide(snapshot(heavy, queue), state=state)
    assert total(after) >= total(before), (before, after)


def maybe_nan(values: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    return st.one_of(values, st.just(NAN))


any_pods = st.lists(
    st.builds(
        PodSignals,
        name=st.just("p"),
        role=st.sampled_from(list(Role)),
        ready=st.booleans(),
        max_num_seqs=st.integers(0, 512),
        running_requests=maybe_nan(st.floats(0.0, 512.0)),
        waiting_requests=maybe_nan(st.floats(0.0, 50.0)),
        interactive_running_requests=maybe_nan(st.floats(0.0, 512.0)),
        interactive_waiting_requests=maybe_nan(st.floats(0.0, 50.0)),
        generation_tokens_per_s=maybe_nan(st.floats(0.0, 1e4)),
        sample_age_s=st.sampled_from([1.0, 30.0, 600.0, math.inf]),
    ),
    max_size=10,
)
any_queues = st.builds(
    BatchQueue,
    st.lists(
        st.builds(BatchGroup, st.floats(NOW_S - 500, NOW_S + 1e4), st.integers(0, 5000)),
        max_size=4,
    ).map(tuple),
    maybe_nan(st.floats(1.0, 3000.0)),
    maybe_nan(st.floats(0.0, 3000.0)),
    st.sampled_from([1.0, 600.0, math.inf]),
)
replica_maps = st.fixed_dictionaries({r: st.integers(0, 6) for r in Role})
bound_maps = st.fixed_dictionaries(
    {
        r: st.builds(
            lambda lo, hi: RoleBounds(min_replicas=lo, max_replicas=hi),
            st.integers(0, 3),
            st.integers(0, 8),
        )
        for r in Role
    }
)


@settings(max_examples=200, deadline=None)
@given(pods=any_pods, queue=any_queues, replicas=replica_maps, bounds=bound_maps, est=estimates)
def test_proposals_are_never_negative_and_cover_allowed_roles(
    pods: list[PodSignals],
    queue: BatchQueue,
    replicas: dict[Role, int],
    bounds: dict[Role, RoleBounds],
    est: float | None,
) -> None:
    tuning = PoolTuning(bounds=bounds)
    proposals, _, state = decide(snapshot(pods, queue, replicas), tuning, GlobalState(est))
    assert set(proposals) == {r for r in Role if bounds[r].max_replicas > 0}
    assert all(v.value >= 0 and v.message for v in proposals.values())
    assert state.batch_instance_tokens_per_s is None or state.batch_instance_tokens_per_s > 0


def unseen(signals: PodSignals) -> PodSignals:
    """The same pod as a failed scrape shows it: stale, unready or without load signals."""
    kind = signals.max_num_seqs % 3  # deterministic, and hypothesis varies it freely
    if kind == 0:
        return replace(signals, sample_age_s=math.inf)
    if kind == 1:
        return replace(signals, ready=False)
    return replace(
        signals,
        running_requests=NAN,
        waiting_requests=NAN,
        interactive_running_requests=NAN,
        interactive_waiting_requests=NAN,
    )


@settings(max_examples=200, deadline=None)
@given(pods=any_pods, queue=any_queues, replicas=replica_maps, est=estimates)
def test_missing_metrics_never_propose_below_current(
    pods: list[PodSignals],
    queue: BatchQueue,
    replicas: dict[Role, int],
    est: float | None,
) -> None:
    missing = [unseen(p) for p in pods]
    stale_queue = replace(queue, sample_age_s=math.inf)
    snap = snapshot(missing, stale_queue, replicas)
    proposals, _, _ = decide(snap, state=GlobalState(est))
    for role, verdict in proposals.items():
        assert verdict.value >= replicas[role], (role, verdict)
        assert verdict.reason is Reason.METRICS_MISSING


def test_an_idle_batch_pod_counts_at_its_measured_capacity_not_its_past_rate() -> None:
    # A backlog lands on a batch pod that was idle: its windowed rate (20 tokens/s, unsaturated)
    # reads its past demand. 100 requests x 300 tokens due in 600 s need 50 tokens/s; one
    # instance was measured at 1,000 tokens/s, so the pod meets it and nothing is added.
    waking = batch_pod(20.0, running=10.0)
    queue = backlog((600.0, 100))
    measured = GlobalState(batch_instance_tokens_per_s=1000.0)
    proposals, observations, _ = decide(snapshot([waking], queue), state=measured)
    assert proposals[Role.BATCH].value == 1
    assert proposals[Role.BATCH].reason is not Reason.BATCH_DEADLINES_AT_RISK
    assert observations["batch_throughput_tokens_per_s"] == pytest.approx(1000.0)
    # Nothing measured yet: the prior is not trusted for a pod's capacity, its rate stands.
    proposals, _, _ = decide(snapshot([waking], queue))
    assert proposals[Role.BATCH].reason is Reason.BATCH_DEADLINES_AT_RISK
