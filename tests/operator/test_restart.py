"""The operator restarts mid-run: the new process resumes from the pool's status.

Under unchanged load, the first ticks of the new process change neither replicas nor batch
sizes, the decision history carries on from where it was, and the controllers' memory is the
one the old process left in status.controllerState: the EWMA of ITL, and a scale-down held by
the stabilisation window whose evidence (the window's recommendations, with their times) must
survive, or the new process would restart the window and scale down at another time.
"""

from __future__ import annotations

import time
from typing import Any

from tests.operator.conftest import OPERATOR, Env
from tests.operator.harness import Load, Pools, condition_is, pool_spec, wait_for, wait_ticks
from tests.operator.rbac_check import chart_grants, denied, namespaced_values

POOL = "steady"
FREE_BATCH = {"minBatchSizeSeqs": 2, "maxBatchSizeSeqs": 16, "initialBatchSizeSeqs": 4}


def _deployments(pools: Pools) -> dict[str, tuple[Any, ...]]:
    return {
        role: (
            d["metadata"]["generation"],
            d["spec"]["replicas"],
            tuple(d["spec"]["template"]["spec"]["containers"][0]["args"]),
        )
        for role, d in pools.deployments(POOL).items()
    }


def _state(pools: Pools) -> dict[str, Any]:
    return dict(pools.status(POOL).get("controllerState") or {})


def _itl_learned(pools: Pools) -> bool:
    local = _state(pools).get("local") or {}
    return all((local.get(r) or {}).get("ewma_itl_s") is not None for r in ("interactive", "mixed"))


def test_a_restarted_operator_resumes_from_status_without_acting(live: Env) -> None:
    pools, audit = live.pools, live.stack.audit
    spec = pool_spec(
        live.prometheus.url,
        roles={
            "interactive": {"minReplicas": 1, "maxReplicas": 1, **FREE_BATCH},
            "mixed": {"minReplicas": 2, "maxReplicas": 3, **FREE_BATCH},
        },
        tuning={"guards": {"scaleDownStabilizationS": 120}},
        # The load goes straight to the pods: this is the pool without its gateway.
        gateway={"enabled": False},
    )
    pools.create(POOL, spec)
    # One request per pod: enough to measure ITL, far from scaling out or growing batches.
    load = Load(live.stack, pools.namespace, POOL, concurrency=3)
    try:
        wait_for(
            lambda: (
                condition_is(pools, POOL, "MetricsAvailable", "True")
                and len(pools.ready_pods(POOL, "mixed")) == 2
            ),
            timeout_s=30,
            what="the pool sampled",
        )
        load.start()
        wait_for(lambda: _itl_learned(pools), timeout_s=30, what="ITL learned under load")
        # The policy now wants one mixed replica fewer; the window holds it for 120 s.
        pools.patch_spec(POOL, {"roles": {"mixed": {"minReplicas": 1}}})
        wait_for(
            lambda: any(
                d["reason"] == "ScaleDownStabilization"
                for d in pools.decisions(POOL, "mixed", "replicas")
            ),
            timeout_s=10,
            what="a scale-down held by the stabilisation window",
        )
        wait_ticks(audit, pools.namespace, POOL, OPERATOR, 2, time.time())

        before = pools.status(POOL)
        objects = _deployments(pools)
        restarted_at = time.time()
        live.operator.restart()
        wait_ticks(audit, pools.namespace, POOL, OPERATOR, 4, restarted_at)
        after = pools.status(POOL)

        assert _deployments(pools) == objects
        writes = [
            f"{r.method} {r.path}"
            for r in audit.by(OPERATOR, restarted_at)
            if r.method != "GET" and "/deployments" in r.path
        ]
        assert writes == []
        old, new = before["decisions"], after["decisions"]
        assert new[: len(old)] == old
        assert not any(d["applied"] for d in new[len(old) :])

        held = [tuple(r) for r in before["controllerState"]["guards"]["mixed"]["recommendations"]]
        assert any(value == 2 for _, value in held), held
        resumed = after["controllerState"]
        window = [tuple(r) for r in resumed["guards"]["mixed"]["recommendations"]]
        assert [r for r in held if r[1] == 2] == [r for r in window if r[1] == 2]
        assert pools.replicas(POOL, "mixed") == 2
        for role in ("interactive", "mixed"):
            assert resumed["local"][role]["ewma_itl_s"] is not None
        assert {c["type"]: c["status"] for c in after["conditions"]}["MetricsAvailable"] == "True"
    finally:
        load.stop()
        pools.delete(POOL)


def test_api_calls_are_allowed_by_the_chart(live: Env) -> None:
    grants = chart_grants(namespaced_values([live.pools.namespace]))
    assert denied(live.stack.audit.by(OPERATOR), grants) == []
