"""A role switched off with maxReplicas 0 after its Deployment exists is scaled to 0."""

from __future__ import annotations

from chiron_operator.api.status import DecisionField
from chiron_operator.core.enums import Reason, Role
from tests.operator.ticks import PureTicks, observe_pool

OFF = {"roles": {"mixed": {"minReplicas": 0, "maxReplicas": 0}}}


def _running(mode: str = "Enforce") -> PureTicks:
    pool = observe_pool(mode)
    pool.set_replicas(Role.MIXED, 2)
    return pool


def test_disabling_a_role_scales_its_deployment_to_zero() -> None:
    pool = _running()
    outcome = pool.tick(spec=OFF)
    assert [(c.role, c.field, c.from_value, c.to_value) for c in outcome.the_plan.changes] == [
        (Role.MIXED, DecisionField.REPLICAS, 2, 0)
    ]
    assert outcome.the_plan.acts
    verdict = outcome.report.decision.roles[Role.MIXED]
    assert verdict.replicas.reason is Reason.CLAMPED_TO_MAX
    assert verdict.max_num_seqs.value == 4, "a role going away is never restarted"
    assert pool.replicas[Role.MIXED] == 0
    assert pool.tick(spec=OFF).the_plan.changes == ()


def test_observe_shows_the_scale_down_without_acting() -> None:
    pool = _running("Observe")
    outcome = pool.tick(spec=OFF)
    assert pool.status["roles"]["mixed"]["desiredReplicas"] == 0
    assert not outcome.the_plan.acts and pool.replicas[Role.MIXED] == 2


def test_a_disabled_role_scaled_to_zero_by_hand_is_no_conflict() -> None:
    pool = _running()
    pool.set_replicas(Role.MIXED, 0, by_operator=False)
    outcome = pool.tick(spec=OFF)
    assert not outcome.the_plan.blocked_by
    assert outcome.adopted == ("llama-mixed",)
    conflict = next(c for c in pool.status["conditions"] if c["type"] == "Conflict")
    assert conflict["status"] == "False"


def test_a_hand_scale_of_an_enabled_role_is_still_a_conflict() -> None:
    pool = _running()
    pool.set_replicas(Role.MIXED, 0, by_operator=False)
    outcome = pool.tick()
    assert "someone else scaled it" in outcome.the_plan.blocked_by
    assert outcome.adopted == ()
