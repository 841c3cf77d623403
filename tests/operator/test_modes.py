"""Observe changes nothing; Recommend writes recommendations and an Event; Enforce acts.

Three pools, one per mode, get the same change at once: a mixed minReplicas raised from 1 to 2,
which every mode's policy turns into "2 mixed replicas".
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.operator.conftest import OPERATOR, Env
from tests.operator.harness import fixed, pool_spec, wait_for, wait_ticks
from tests.operator.rbac_check import chart_grants, denied, namespaced_values

MODES = {"Observe": "mode-observe", "Recommend": "mode-recommend", "Enforce": "mode-enforce"}


@pytest.fixture(scope="module")
def raised(plane: Env) -> Iterator[float]:
    """The three pools after their minimum was raised and a few ticks ran; when it was raised."""
    pools = plane.pools
    for mode, name in MODES.items():
        pools.create(name, pool_spec(plane.prometheus.url, mode=mode, roles={"mixed": fixed(1, 4)}))
    try:
        for name in MODES.values():
            wait_for(lambda n=name: pools.status(n).get("roles"), timeout_s=10, what="a tick")
        since = time.time()
        for name in MODES.values():
            pools.patch_spec(name, {"roles": {"mixed": {"minReplicas": 2}}})
        for name in MODES.values():
            wait_ticks(plane.stack.audit, pools.namespace, name, OPERATOR, 3, since)
        yield since
    finally:
        for name in MODES.values():
            pools.delete(name)


def _writes(plane: Env, pool: str, since: float) -> list[str]:
    prefix = f"/apis/apps/v1/namespaces/{plane.pools.namespace}/deployments/{pool}-"
    return [
        f"{r.method} {r.path}"
        for r in plane.stack.audit.by(OPERATOR, since)
        if r.method != "GET" and r.path.startswith(prefix)
    ]


def test_observe_computes_and_publishes_but_changes_nothing(plane: Env, raised: float) -> None:
    pool = MODES["Observe"]
    assert plane.pools.replicas(pool, "mixed") == 1
    assert _writes(plane, pool, raised) == []
    status = plane.pools.status(pool)
    assert status["roles"]["mixed"]["desiredReplicas"] == 2
    assert status.get("recommendations") in (None, {})
    decided = [d for d in plane.pools.decisions(pool, "mixed", "replicas") if d["to"] == 2]
    assert decided and not any(d["applied"] for d in decided)
    assert len(decided) == 1, "an unapplied change is recorded once, not every tick"
    assert plane.pools.events(pool, "Recommendation") == []
    assert [e for e in plane.pools.events(pool) if e["type"] == "Normal"] == []


def test_recommend_writes_recommendations_and_an_event(plane: Env, raised: float) -> None:
    pool = MODES["Recommend"]
    assert plane.pools.replicas(pool, "mixed") == 1
    assert _writes(plane, pool, raised) == []
    recommendations = plane.pools.status(pool)["recommendations"]
    assert recommendations["mixed"]["replicas"] == 2
    assert recommendations["interactive"]["replicas"] == 1
    events = plane.pools.events(pool, "Recommendation")
    assert len(events) == 1
    assert "recommend mixed replicas 1 -> 2" in events[0]["message"]


def test_enforce_acts(plane: Env, raised: float) -> None:
    pool = MODES["Enforce"]
    assert plane.pools.replicas(pool, "mixed") == 2
    assert _writes(plane, pool, raised) == [
        f"PATCH /apis/apps/v1/namespaces/{plane.pools.namespace}/deployments/{pool}-mixed"
    ]
    applied = [d for d in plane.pools.decisions(pool, "mixed", "replicas") if d["applied"]]
    assert [(d["from"], d["to"]) for d in applied] == [(1, 2)]
    assert plane.pools.status(pool).get("recommendations") in (None, {})
    normal = [e for e in plane.pools.events(pool) if e["type"] == "Normal"]
    assert len(normal) == 1
    assert "mixed replicas 1 -> 2" in normal[0]["message"]


def test_api_calls_are_allowed_by_the_chart(plane: Env) -> None:
    grants = chart_grants(namespaced_values([plane.pools.namespace]))
    assert denied(plane.stack.audit.by(OPERATOR), grants) == []
