"""The Deployment/ReplicaSet arithmetic: scaling, rolling updates, scale-down ranking."""

from __future__ import annotations

from typing import Any

import pytest

from chiron_operator.devcluster.cluster.rollout import (
    PodState,
    deployment_status,
    plan,
    rolling_limits,
    scale_down_order,
    template_hash,
)

SURGE_ONE: dict[str, Any] = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
}


def pod(
    name: str, hash_: str = "new", *, ready: bool = True, cost: int = 0, created: int = 0
) -> PodState:
    return PodState(name, hash_, ready, cost, created)


def test_template_hash_is_stable_and_sensitive() -> None:
    template = {"spec": {"containers": [{"name": "vllm", "args": ["a"]}]}}
    assert template_hash(template) == template_hash({"spec": dict(template["spec"])})
    assert len(template_hash(template)) == 10
    changed = {"spec": {"containers": [{"name": "vllm", "args": ["b"]}]}}
    assert template_hash(changed) != template_hash(template)


@pytest.mark.parametrize(
    ("strategy", "desired", "expected"),
    [
        ({}, 4, (1, 1)),  # 25% each: surge rounds up, unavailable down
        ({}, 2, (1, 0)),
        (SURGE_ONE, 5, (1, 0)),
        ({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}, 3, (0, 1)),
        ({"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": "50%"}}, 3, (2, 1)),
    ],
)
def test_rolling_limits(strategy: dict[str, Any], desired: int, expected: tuple[int, int]) -> None:
    assert rolling_limits(strategy, desired) == expected


def test_scale_up_and_down() -> None:
    assert plan(3, "new", [pod("a")], SURGE_ONE).create == 2
    pods = [pod("a", cost=5, created=1), pod("b", cost=-1, created=2), pod("c", cost=5, created=3)]
    down = plan(1, "new", pods, SURGE_ONE)
    assert down.create == 0
    assert down.delete == ("b", "c")  # the cheapest, then the newest of the rest


def test_scale_down_ranking_not_ready_then_cost_then_newest() -> None:
    pods = [
        pod("old-cheap", cost=-5, created=1),
        pod("new-default", created=3),
        pod("old-default", created=2),
        pod("unready", ready=False, cost=100, created=0),
    ]
    order = [p.name for p in scale_down_order(pods)]
    assert order == ["unready", "old-cheap", "new-default", "old-default"]


def roll(desired: int, pods: list[PodState]) -> tuple[int, tuple[str, ...]]:
    step = plan(desired, "new", pods, SURGE_ONE)
    return step.create, step.delete


def test_rolling_update_surges_and_never_drops_ready_capacity() -> None:
    # Two old ready pods: one new pod is added, none removed.
    assert roll(2, [pod("o1", "old"), pod("o2", "old")]) == (1, ())
    # The new pod is not ready yet: nothing changes.
    assert roll(2, [pod("o1", "old"), pod("o2", "old"), pod("n1", ready=False)]) == (0, ())
    # Once it is ready, one old pod goes.
    create, delete = roll(2, [pod("o1", "old"), pod("o2", "old"), pod("n1")])
    assert create == 0
    assert len(delete) == 1
    assert delete[0] in {"o1", "o2"}
    # With one old pod left, the next new pod is surged.
    assert roll(2, [pod("o2", "old"), pod("n1")]) == (1, ())
    # And when all are new, the rollout is a plain scale.
    assert roll(2, [pod("n1"), pod("n2")]) == (0, ())


def test_rolling_update_removes_unready_old_pods_first() -> None:
    create, delete = roll(2, [pod("o1", "old"), pod("o2", "old", ready=False), pod("n1")])
    assert delete == ("o2",)
    assert create == 0


def test_recreate_deletes_old_pods_before_creating() -> None:
    recreate = {"type": "Recreate"}
    assert plan(2, "new", [pod("o1", "old"), pod("o2", "old")], recreate).delete == ("o1", "o2")
    assert plan(2, "new", [], recreate).create == 2


def test_scaling_to_zero_during_a_rollout_removes_everything() -> None:
    step = plan(0, "new", [pod("o1", "old"), pod("n1")], SURGE_ONE)
    assert step.create == 0
    assert set(step.delete) == {"o1", "n1"}


def test_deployment_status() -> None:
    deployment = {"metadata": {"generation": 4}, "spec": {"replicas": 2, "strategy": SURGE_ONE}}
    pods = [pod("o1", "old"), pod("n1"), pod("n2", ready=False)]
    status = deployment_status(deployment, pods, "new", previous=None, now="T1")
    assert status["observedGeneration"] == 4
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"]) == (3, 2, 2)
    assert status["unavailableReplicas"] == 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "ReplicaSetUpdated"
    again = deployment_status(deployment, pods, "new", previous=status, now="T2")
    assert again == status  # no transition: the timestamps are kept, nothing to write
