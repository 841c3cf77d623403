"""The pure half of a tick: decision -> plan -> records -> status."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from chiron_operator.api.spec import Mode
from chiron_operator.api.status import ConditionType, DecisionField, PoolStatus
from chiron_operator.core.decision import PoolDecision, RoleDecision, Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, RoleSnapshot
from chiron_operator.core.state import ChironState, GlobalState
from chiron_operator.core.tuning import GlobalTuning, PoolTuning
from chiron_operator.metrics import RoleFacts
from chiron_operator.operator.plan import plan, records
from chiron_operator.operator.status import TickReport, build_status, signals_status

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def decision(mixed_replicas: int, mixed_seqs: int, reason: Reason) -> PoolDecision:
    def role(r: Role, replicas: int, seqs: int, why: Reason) -> RoleDecision:
        return RoleDecision(r, Verdict(replicas, why, f"{why} msg"), Verdict(seqs, why, "m"), seqs)

    return PoolDecision(
        0.0,
        {
            Role.INTERACTIVE: role(Role.INTERACTIVE, 1, 32, Reason.NO_CHANGE),
            Role.MIXED: role(Role.MIXED, mixed_replicas, mixed_seqs, reason),
        },
        {"interactive_backpressure_ratio": 0.9, "batch_backpressure_ratio": math.nan},
    )


FACTS = {
    Role.INTERACTIVE: RoleFacts(1, 1, 0, 32),
    Role.MIXED: RoleFacts(1, 1, 0, 64),
}


def test_plan_lists_only_changes_and_gates_on_mode_and_conflict() -> None:
    d = decision(3, 64, Reason.INTERACTIVE_BACKPRESSURE_HIGH)
    enforced = plan(d, FACTS, Mode.ENFORCE)
    assert [(c.role, c.field, c.from_value, c.to_value) for c in enforced.changes] == [
        (Role.MIXED, DecisionField.REPLICAS, 1, 3)
    ]
    assert enforced.acts
    assert not plan(d, FACTS, Mode.OBSERVE).acts
    assert not plan(d, FACTS, Mode.RECOMMEND).acts
    blocked = plan(d, FACTS, Mode.ENFORCE, conflict="HPA llm/hpa targets llama-mixed")
    assert not blocked.acts and blocked.changes


def test_records_keep_changes_and_new_hold_reasons_once() -> None:
    hold = decision(1, 64, Reason.METRICS_STALE)
    first = records(hold, FACTS, plan(hold, FACTS, Mode.ENFORCE), [], NOW)
    assert {(r.role, r.reason) for r in first} >= {(Role.MIXED, "MetricsStale")}
    again = records(hold, FACTS, plan(hold, FACTS, Mode.ENFORCE), first, NOW)
    assert again == [], "a hold with an unchanged reason must not flood the history"
    change = decision(2, 64, Reason.INTERACTIVE_BACKPRESSURE_HIGH)
    third = records(change, FACTS, plan(change, FACTS, Mode.OBSERVE), first, NOW)
    assert any(
        r.field is DecisionField.REPLICAS and r.to_value == 2 and not r.applied for r in third
    )


def test_status_tells_the_story() -> None:
    pod = PodSignals(
        "llama-mixed-a-b", Role.MIXED, True, 64, 40.0, 2.0, ttft_s=2.5, itl_s=0.05, sample_age_s=3.0
    )
    snapshot = PoolSnapshot(
        0.0,
        {Role.MIXED: RoleSnapshot(Role.MIXED, 1, 1, 0, 64, (pod,))},
        metrics_age_s=3.0,
    )
    d = decision(3, 64, Reason.INTERACTIVE_BACKPRESSURE_HIGH)
    the_plan = plan(d, FACTS, Mode.RECOMMEND)
    report = TickReport(
        snapshot=snapshot,
        decision=d,
        facts=FACTS,
        the_plan=the_plan,
        new_records=records(d, FACTS, the_plan, [], NOW),
        state=ChironState(),
        tuning=PoolTuning(),
        mode=Mode.RECOMMEND,
        metric_names=None,
        generation=4,
        history_limit=3,
        now=NOW,
    )
    status = build_status(report, PoolStatus())
    wire = status.model_dump(mode="json", by_alias=True)
    assert wire["replicasSummary"] == "I:1/1 M:1/3 B:0/0"
    assert wire["lastReason"] == "InteractiveBackpressureHigh"
    assert wire["signals"]["ttftSlackRatio"] < 0  # 2.5 s against a 2 s target
    assert wire["signals"]["batchBackpressureRatio"] is None  # NaN is unknown, not 0
    assert wire["recommendations"]["mixed"] == {"replicas": 3, "batchSizeSeqs": 64}
    assert len(wire["decisions"]) <= 3
    scaling = next(c for c in status.conditions if c.type == ConditionType.SCALING)
    assert "not applied: mode Recommend" in scaling.message
    metrics = next(c for c in status.conditions if c.type == ConditionType.METRICS_AVAILABLE)
    assert metrics.status == "True"


def test_status_publishes_the_batch_instance_throughput() -> None:
    d = decision(1, 64, Reason.NO_CHANGE)
    snapshot = PoolSnapshot(0.0, {}, metrics_age_s=3.0)
    tuning = PoolTuning(global_scaling=GlobalTuning(batch_instance_prior_tokens_per_s=1500.0))

    def published(state: ChironState) -> object:
        signals = signals_status(snapshot, d, tuning, None, state)
        return signals.model_dump(mode="json", by_alias=True)["batchInstanceTokensPerS"]

    # Nothing measured yet: the prior the batch rule sizes with, not null.
    assert published(ChironState()) == 1500.0
    measured = ChironState(global_scaling=GlobalState(batch_instance_tokens_per_s=2345.5))
    assert published(measured) == 2345.5


def test_unapplied_changes_are_recorded_once_per_value_and_reason() -> None:
    change = decision(2, 64, Reason.INTERACTIVE_BACKPRESSURE_HIGH)
    blocked = plan(change, FACTS, Mode.ENFORCE, conflict="HPA llm/hpa targets llama-mixed")
    for the_plan in (plan(change, FACTS, Mode.OBSERVE), blocked):
        first = records(change, FACTS, the_plan, [], NOW)
        assert [(r.role, r.to_value, r.applied) for r in first if r.role is Role.MIXED] == [
            (Role.MIXED, 2, False),
            (Role.MIXED, 64, False),
        ]
        assert records(change, FACTS, the_plan, first, NOW) == [], "the same unapplied change"
        bigger = decision(3, 64, Reason.INTERACTIVE_BACKPRESSURE_HIGH)
        moved = records(bigger, FACTS, plan(bigger, FACTS, Mode.OBSERVE), first, NOW)
        assert [(r.field, r.to_value) for r in moved] == [(DecisionField.REPLICAS, 3)]
        clamped = decision(2, 64, Reason.CLAMPED_TO_MIN)
        why = records(clamped, FACTS, plan(clamped, FACTS, Mode.OBSERVE), first, NOW)
        assert [(r.field, r.reason) for r in why] == [
            (DecisionField.REPLICAS, "ClampedToMin"),
            (DecisionField.BATCH_SIZE, "ClampedToMin"),
        ]


def test_applied_changes_are_always_recorded() -> None:
    change = decision(2, 64, Reason.INTERACTIVE_BACKPRESSURE_HIGH)
    enforced = plan(change, FACTS, Mode.ENFORCE)
    first = records(change, FACTS, enforced, [], NOW)
    again = records(change, FACTS, enforced, first, NOW)
    assert [(r.to_value, r.applied) for r in again] == [(2, True)]
