"""Changes that are not applied leave no trace in the controllers' bookkeeping, nor a flood.

Observe and Recommend compute exactly what Enforce would do, every tick: a role that wants to
grow must show the same desired count and reason tick after tick (not alternate with a
ScaleUpCooldown hold for a scale-up that never happened), a batch-size restart that never
happened must not spend the restart budget, and switching to Enforce must then act at once.
"""

from __future__ import annotations

from chiron_operator.api import PoolStatus
from chiron_operator.api.spec import Mode
from chiron_operator.api.status import DecisionField
from chiron_operator.core.enums import Reason, Role
from chiron_operator.operator.events import events_for
from chiron_operator.operator.outcome import TickOutcome
from chiron_operator.operator.plan import Change
from tests.operator.ticks import observe_pool

# Past the pool's 30 s scale-up cooldown (one tick per second).
TICKS = 40
RESIZABLE = {
    "mixed": {
        "minReplicas": 1,
        "maxReplicas": 1,
        "minBatchSizeSeqs": 4,
        "maxBatchSizeSeqs": 64,
        "initialBatchSizeSeqs": 4,
    }
}
QUICK_RESTARTS = {"restart": {"dwellS": 2, "urgentDwellS": 1, "minIntervalS": 600}}


def _mixed(outcome: TickOutcome, field: DecisionField) -> tuple[int, Reason]:
    decided = outcome.report.decision.roles[Role.MIXED]
    verdict = decided.replicas if field is DecisionField.REPLICAS else decided.max_num_seqs
    return verdict.value, verdict.reason


def _changes(outcome: TickOutcome) -> list[tuple[Role, DecisionField, int, int]]:
    return [(c.role, c.field, c.from_value, c.to_value) for c in outcome.the_plan.changes]


def test_observe_shows_a_stable_desired_count_and_reason() -> None:
    pool = observe_pool()
    seen = {_mixed(pool.tick(), DecisionField.REPLICAS) for _ in range(TICKS)}
    assert seen == {(3, Reason.INTERACTIVE_BACKPRESSURE_HIGH)}
    assert pool.status["roles"]["mixed"]["desiredReplicas"] == 3
    assert pool.replicas[Role.MIXED] == 1
    mixed = [d for d in pool.status["decisions"] if d["role"] == "mixed"]
    assert [(d["field"], d["to"], d["applied"]) for d in mixed] == [
        ("replicas", 3, False),
        ("batchSize", 4, False),
    ], "an unapplied change is recorded once, not every tick"


def test_switching_to_enforce_applies_at_once() -> None:
    pool = observe_pool()
    for _ in range(TICKS):
        pool.tick()
    enforced = pool.tick(spec={"mode": "Enforce"})
    assert enforced.the_plan.acts
    assert _changes(enforced) == [(Role.MIXED, DecisionField.REPLICAS, 1, 3)]
    assert pool.replicas[Role.MIXED] == 3
    applied = [d for d in pool.status["decisions"] if d["applied"]]
    assert [(d["role"], d["to"]) for d in applied] == [("mixed", 3)]


def test_recommend_posts_one_recommendation_while_it_stands() -> None:
    pool = observe_pool("Recommend")
    posted = []
    for _ in range(TICKS):
        previous = PoolStatus.model_validate(pool.status)
        outcome = pool.tick()
        posted += [r for _, r, _ in events_for(outcome.report, previous, outcome.status)]
    assert posted == ["Recommendation"]


def test_unapplied_restarts_spend_no_restart_budget() -> None:
    # The slow path (no gateway): every batch-size change is a restart.
    pool = observe_pool(roles=RESIZABLE, tuning=QUICK_RESTARTS, gateway={"enabled": False})
    decided = [_mixed(pool.tick(), DecisionField.BATCH_SIZE) for _ in range(8)]
    assert decided[-1] == (6, Reason.RESTART_APPLIED)
    assert all(d == decided[-1] for d in decided[2:]), decided
    enforced = pool.tick(spec={"mode": "Enforce"})
    assert _changes(enforced) == [(Role.MIXED, DecisionField.BATCH_SIZE, 4, 6)]
    assert enforced.the_plan.acts


def test_a_failed_write_books_only_what_was_written() -> None:
    pool = observe_pool("Enforce")
    failed = pool.tick(apply=False)
    change: Change = failed.the_plan.changes[0]
    assert failed.the_plan.acts and change.field is DecisionField.REPLICAS
    assert failed.report.unapplied == {change}
    assert not any(d["applied"] for d in pool.status["decisions"])
    assert events_for(failed.report, failed.status, failed.status) == []
    retried = pool.tick()
    assert _changes(retried) == [(Role.MIXED, DecisionField.REPLICAS, 1, 3)]
    assert pool.replicas[Role.MIXED] == 3
    assert pool.tick(spec={"mode": Mode.ENFORCE.value}).the_plan.changes == ()


def _target_records(outcome: TickOutcome) -> list[tuple[int, int, str, bool]]:
    return [
        (r.from_value, r.to_value, r.controller.value, r.applied)
        for r in outcome.report.new_records
        if r.field is DecisionField.TARGET_BATCH_SIZE and r.role is Role.MIXED
    ]


def test_with_the_gateway_target_moves_are_recorded_and_applied_in_enforce_only() -> None:
    """With the fast path the target is the batch size pods run: its moves are the history's
    batch-size changes (applied by the gateway in Enforce only), while the ceiling stays."""
    shrinking = {"mixed": {**RESIZABLE["mixed"], "initialBatchSizeSeqs": 64}}
    unmet = {"interactiveTtftS": 2.0, "interactiveItlS": 0.001}  # every tick halves the target
    for mode, applied in (("Enforce", True), ("Observe", False)):
        pool = observe_pool(mode, roles=shrinking, slo=unmet)
        outcomes = [pool.tick(seqs=64) for _ in range(5)]
        moves = [m for o in outcomes for m in _target_records(o)]
        targets = [o.status.roles.mixed.target_batch_size_seqs for o in outcomes]
        assert targets == [32, 16, 8, 4, 4]
        assert moves == [
            (32, 16, "local", applied),
            (16, 8, "local", applied),
            (8, 4, "local", applied),
        ]
        ceilings = {o.report.decision.roles[Role.MIXED].max_num_seqs.value for o in outcomes}
        assert ceilings == {64}
