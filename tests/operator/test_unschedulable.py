"""Pods no node fits: reported at once, the role capped after the grace, retried per grace.

A mixed role scales out to 3, but only one pod finds a GPU node. Within the grace period the
operator waits (a cluster autoscaler may add a node) and says so; past it, the role is capped
at its scheduled pod, and it tries to grow again only once the next grace period is over.
"""

from __future__ import annotations

from chiron_operator.api import PoolStatus
from chiron_operator.control.guards import UNSCHEDULABLE_GRACE_S
from chiron_operator.core.enums import Reason, Role
from chiron_operator.operator.events import events_for
from chiron_operator.operator.outcome import TickOutcome
from tests.operator.ticks import PureTicks, observe_pool


def _tick(pool: PureTicks, events: list[tuple[str, str, str]]) -> TickOutcome:
    previous = PoolStatus.model_validate(pool.status)
    outcome = pool.tick()
    posted = events_for(outcome.report, previous, outcome.status)
    events += [(kind.value, reason, message) for kind, reason, message in posted]
    return outcome


def _condition(pool: PureTicks, kind: str) -> dict[str, str]:
    found: dict[str, str] = next(c for c in pool.status["conditions"] if c["type"] == kind)
    return found


def _mixed_replicas(outcome: TickOutcome) -> tuple[int, Reason]:
    verdict = outcome.report.decision.roles[Role.MIXED].replicas
    return verdict.value, verdict.reason


def _scaled_out_with_two_unschedulable(events: list[tuple[str, str, str]]) -> PureTicks:
    pool = observe_pool("Enforce")
    _tick(pool, events)
    assert pool.replicas[Role.MIXED] == 3
    pool.unschedulable[Role.MIXED] = (2, pool.now_s)
    return pool


def test_unschedulable_pods_are_reported_within_the_grace_and_not_capped() -> None:
    events: list[tuple[str, str, str]] = []
    pool = _scaled_out_with_two_unschedulable(events)
    for _ in range(5):
        outcome = _tick(pool, events)
    pool.now_s += UNSCHEDULABLE_GRACE_S / 2
    outcome = _tick(pool, events)
    assert pool.replicas[Role.MIXED] == 3
    assert _mixed_replicas(outcome)[1] is not Reason.UNSCHEDULABLE
    schedulable = _condition(pool, "Schedulable")
    assert (schedulable["status"], schedulable["reason"]) == ("False", "PodsUnschedulable")
    assert "mixed: 2 pod(s) unschedulable" in schedulable["message"]
    assert "Insufficient nvidia.com/gpu" in schedulable["message"]
    scaling = _condition(pool, "Scaling")
    assert scaling["reason"] == "PodsUnschedulable", "pending pods are not 'starting' for ever"
    warnings = [e for e in events if e[1] == "Unschedulable"]
    assert len(warnings) == 1, "one Warning when it begins, not one per tick"
    assert warnings[0][0] == "Warning"
    assert "mixed: 2 pod(s)" in warnings[0][2]


def test_past_the_grace_the_role_is_capped_and_retried_once_per_grace() -> None:
    events: list[tuple[str, str, str]] = []
    pool = _scaled_out_with_two_unschedulable(events)
    _tick(pool, events)
    pool.now_s += UNSCHEDULABLE_GRACE_S
    capped = _tick(pool, events)
    assert _mixed_replicas(capped) == (1, Reason.UNSCHEDULABLE)
    assert pool.replicas[Role.MIXED] == 1, "capped at the one scheduled pod"
    record = pool.status["decisions"][-1]
    assert (record["role"], record["to"], record["reason"], record["applied"]) == (
        "mixed",
        1,
        "Unschedulable",
        True,
    )
    assert _condition(pool, "Schedulable")["reason"] == "UnschedulableCapped"
    # The pending pods went with the scale-down; the policy still wants 3, but waits.
    pool.unschedulable.clear()
    held = [_mixed_replicas(_tick(pool, events)) for _ in range(10)]
    assert set(held) == {(1, Reason.UNSCHEDULABLE)}
    assert pool.replicas[Role.MIXED] == 1
    assert _condition(pool, "Schedulable")["reason"] == "UnschedulableCapped"
    pool.now_s += UNSCHEDULABLE_GRACE_S
    retried = _tick(pool, events)
    assert _mixed_replicas(retried) == (3, Reason.INTERACTIVE_BACKPRESSURE_HIGH)
    assert pool.replicas[Role.MIXED] == 3
    assert _condition(pool, "Schedulable")["status"] == "True"
    told = [
        (kind, reason)
        for kind, reason, _ in events
        if "Unschedulable" in reason or "Pods" in reason
    ]
    assert told == [
        ("Warning", "Unschedulable"),  # pods wait for a node
        ("Normal", "Unschedulable"),  # the applied cap, as every applied change
        ("Warning", "Unschedulable"),  # the grace ran out: capped
        ("Normal", "PodsScheduled"),  # the retry
    ]


def test_min_replicas_still_wins_over_the_cap() -> None:
    events: list[tuple[str, str, str]] = []
    pool = observe_pool("Enforce", roles={"mixed": {"minReplicas": 3}})
    _tick(pool, events)
    assert pool.replicas[Role.MIXED] == 3
    pool.unschedulable[Role.MIXED] = (2, pool.now_s)
    pool.now_s += UNSCHEDULABLE_GRACE_S
    outcome = _tick(pool, events)
    assert _mixed_replicas(outcome) == (3, Reason.CLAMPED_TO_MIN)
    assert pool.replicas[Role.MIXED] == 3
    assert _condition(pool, "Schedulable")["reason"] == "UnschedulableCapped"
