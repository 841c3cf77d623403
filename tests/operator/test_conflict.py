"""An HPA on a pool's Deployment: the pool reports the conflict and does not act until it ends."""

from __future__ import annotations

import time

from tests.operator.conftest import OPERATOR, Env
from tests.operator.harness import condition_is, fixed, pool_spec, wait_for, wait_ticks
from tests.operator.rbac_check import chart_grants, denied, namespaced_values

POOL = "contested"


def test_an_hpa_blocks_every_change_and_its_removal_lets_the_pool_act(plane: Env) -> None:
    pools, audit = plane.pools, plane.stack.audit
    pools.create(POOL, pool_spec(plane.prometheus.url, roles={"mixed": fixed(1, 4)}))
    try:
        wait_for(lambda: pools.status(POOL).get("roles"), timeout_s=10, what="a first tick")
        pools.create_hpa("contested-hpa", f"{POOL}-mixed")
        conflict = wait_for(
            lambda: condition_is(pools, POOL, "Conflict", "True"),
            timeout_s=10,
            what="Conflict=True",
        )
        assert conflict["reason"] == "HorizontalPodAutoscalerTargetsDeployment"
        assert "contested-hpa" in conflict["message"]
        assert f"{POOL}-mixed" in conflict["message"]

        # The policy now wants 2 mixed replicas (the new minimum): the conflict must hold it.
        blocked_from = time.time()
        pools.patch_spec(POOL, {"roles": {"mixed": {"minReplicas": 2}}})
        wait_ticks(audit, pools.namespace, POOL, OPERATOR, 4, blocked_from)
        assert pools.replicas(POOL, "mixed") == 1
        wanted = [d for d in pools.decisions(POOL, "mixed", "replicas") if d["to"] == 2]
        assert wanted, "the policy wanted 2 mixed replicas"
        assert not any(d["applied"] for d in wanted)
        assert pools.status(POOL)["roles"]["mixed"]["desiredReplicas"] == 2
        deployment_writes = [
            r
            for r in audit.by(OPERATOR, blocked_from)
            if r.method in ("PATCH", "PUT") and "/deployments/" in r.path
        ]
        assert deployment_writes == []
        warnings = pools.events(POOL, "Conflict")
        assert len(warnings) == 1
        assert warnings[0]["type"] == "Warning"
        assert "contested-hpa" in warnings[0]["message"]

        pools.delete_hpa("contested-hpa")
        wait_for(
            lambda: pools.replicas(POOL, "mixed") == 2, timeout_s=10, what="the scale-up applied"
        )
        assert condition_is(pools, POOL, "Conflict", "False")
        applied = [d for d in pools.decisions(POOL, "mixed", "replicas") if d["applied"]]
        assert [(d["from"], d["to"]) for d in applied] == [(1, 2)]
    finally:
        pools.delete(POOL)


def test_api_calls_are_allowed_by_the_chart(plane: Env) -> None:
    grants = chart_grants(namespaced_values([plane.pools.namespace]))
    assert denied(plane.stack.audit.by(OPERATOR), grants) == []
