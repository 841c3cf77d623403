"""The real operator scales a role disabled with maxReplicas 0 to 0, and adopts a hand scale-down.

Pools on the `plane` cluster (no pods: the decisions here depend on the bounds, not on load).
"""

from __future__ import annotations

from chiron_operator.kube.labels import ANNOTATION_APPLIED_REPLICAS
from tests.operator.conftest import Env
from tests.operator.harness import condition_is, fixed, pool_spec, wait_for

OFF = {"roles": {"mixed": {"minReplicas": 0, "maxReplicas": 0}}}


def _applied(plane: Env, pool: str) -> str | None:
    found = plane.pools.deployment(pool, "mixed") or {}
    return ((found.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_APPLIED_REPLICAS)


def _running(plane: Env, pool: str) -> None:
    spec = pool_spec(plane.prometheus.url, roles={"mixed": fixed(2, 3)})
    plane.pools.create(pool, spec)
    wait_for(lambda: plane.pools.replicas(pool, "mixed") == 2, timeout_s=15, what="2 mixed")


def test_disabling_a_running_role_scales_it_to_zero(plane: Env) -> None:
    pool = "disable-live"
    _running(plane, pool)
    try:
        plane.pools.patch_spec(pool, OFF)
        wait_for(lambda: plane.pools.replicas(pool, "mixed") == 0, timeout_s=15, what="0 mixed")
        downs = [d for d in plane.pools.decisions(pool, "mixed", "replicas") if d["applied"]]
        assert [(d["from"], d["to"], d["reason"]) for d in downs][-1] == (2, 0, "ClampedToMax")
        assert condition_is(plane.pools, pool, "Conflict", "False")
    finally:
        plane.pools.delete(pool)


def test_a_hand_scale_down_of_a_disabled_role_is_adopted(plane: Env) -> None:
    pool = "disable-hand"
    _running(plane, pool)
    try:
        plane.pools.kube.patch_deployment(
            plane.pools.namespace, f"{pool}-mixed", {"spec": {"replicas": 0}}
        )
        plane.pools.patch_spec(pool, OFF)
        wait_for(lambda: _applied(plane, pool) == "0", timeout_s=15, what="0 recorded")
        wait_for(
            lambda: condition_is(plane.pools, pool, "Conflict", "False"),
            timeout_s=15,
            what="no conflict",
        )
        # Enabled again, the role is scaled up: no stale record left to call it a conflict.
        plane.pools.patch_spec(pool, {"roles": {"mixed": fixed(1, 3)}})
        wait_for(lambda: plane.pools.replicas(pool, "mixed") == 1, timeout_s=15, what="1 mixed")
        assert condition_is(plane.pools, pool, "Conflict", "False")
    finally:
        plane.pools.delete(pool)
