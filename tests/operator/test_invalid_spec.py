"""An invalid pool (posted past CRD validation) is reported, never crash-looped, and recovers.

The dev cluster's API server does not evaluate the CRD's CEL rules, as an old CRD or a server
that skipped them would not: the operator must catch what they would have.
"""

from __future__ import annotations

import time

from tests.operator.conftest import OPERATOR, Env
from tests.operator.harness import (
    condition_is,
    fixed,
    pool_spec,
    status_writes,
    wait_for,
    wait_ticks,
)
from tests.operator.rbac_check import chart_grants, denied, namespaced_values

BAD, GOOD = "invalid", "valid-neighbour"


def test_an_invalid_pool_is_reported_held_and_recovers_when_fixed(plane: Env) -> None:
    pools, audit = plane.pools, plane.stack.audit
    started = time.time()
    pools.create(BAD, pool_spec(plane.prometheus.url, roles={"mixed": fixed(3, 1)}))
    pools.create(GOOD, pool_spec(plane.prometheus.url))
    try:
        invalid = wait_for(
            lambda: condition_is(pools, BAD, "InvalidSpec", "True"),
            timeout_s=10,
            what="InvalidSpec=True",
        )
        assert "spec.roles.mixed.minReplicas" in invalid["message"]
        assert "spec.roles.mixed.maxReplicas" in invalid["message"]
        ready = pools.condition(BAD, "Ready")
        assert ready is not None and ready["status"] == "False"
        assert ready["reason"] == "InvalidSpec"

        # The neighbour is served meanwhile: objects, and a tick every second.
        wait_ticks(audit, pools.namespace, GOOD, OPERATOR, 5, started)
        assert set(pools.deployments(GOOD)) == {"interactive", "mixed"}
        assert plane.operator.process.running

        # No crash loop: nothing created, one status write and one Event for the verdict.
        assert pools.deployments(BAD) == {}
        assert len(status_writes(audit, pools.namespace, BAD, OPERATOR, started)) == 1
        events = pools.events(BAD, "InvalidSpec")
        assert [e["type"] for e in events] == ["Warning"]
        assert "spec.roles.mixed.minReplicas" in events[0]["message"]

        # The daemon kept running: fixing the spec clears the condition and builds the pool.
        pools.patch_spec(BAD, {"roles": {"mixed": {"minReplicas": 1, "maxReplicas": 3}}})
        wait_for(
            lambda: condition_is(pools, BAD, "InvalidSpec", "False"),
            timeout_s=10,
            what="InvalidSpec=False after the fix",
        )
        wait_for(
            lambda: set(pools.deployments(BAD)) == {"interactive", "mixed"},
            timeout_s=10,
            what="the fixed pool's Deployments",
        )
        wait_for(
            lambda: pools.status(BAD).get("roles"), timeout_s=10, what="ticks of the fixed pool"
        )
    finally:
        pools.delete(BAD)
        pools.delete(GOOD)


def test_api_calls_are_allowed_by_the_chart(plane: Env) -> None:
    grants = chart_grants(namespaced_values([plane.pools.namespace]))
    assert denied(plane.stack.audit.by(OPERATOR), grants) == []
