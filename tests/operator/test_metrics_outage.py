"""Prometheus stops: the pool holds (MetricsAvailable=False, a Warning Event), never scales
down on missing data; when Prometheus is back, the held scale-down happens.

The pool reads its own Prometheus (scraping the same pods as the stack's), so stopping it
touches no other test. While it is down the pool's minimum is lowered: with fresh metrics the
idle pool would then lose a mixed replica after the 2 s stabilisation window.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from chiron_operator.devcluster.cluster.prometheus import PrometheusProcess
from tests.operator.conftest import OPERATOR, Env
from tests.operator.harness import (
    condition_is,
    fixed,
    pool_spec,
    record_time,
    wait_for,
    wait_ticks,
)
from tests.operator.rbac_check import chart_grants, denied, namespaced_values

POOL = "outage"
HELD_TICKS = 5


@pytest.fixture(scope="module")
def prometheus(live: Env) -> Iterator[PrometheusProcess]:
    own = live.stack.new_prometheus(live.workdir / "prometheus-outage")
    try:
        yield own
    finally:
        own.stop()


def test_prometheus_outage_holds_the_pool_and_recovery_releases_it(
    live: Env, prometheus: PrometheusProcess
) -> None:
    pools, audit = live.pools, live.stack.audit
    spec = pool_spec(
        prometheus.url,
        roles={"mixed": fixed(2, 3)},
        tuning={"guards": {"scaleDownStabilizationS": 2, "metricsStalenessS": 5}},
        # The load goes straight to the pods: this is the pool without its gateway.
        gateway={"enabled": False},
    )
    pools.create(POOL, spec)
    try:
        wait_for(
            lambda: (
                (pools.status(POOL).get("signals") or {}).get("interactiveBackpressureRatio")
                is not None
            ),
            timeout_s=30,
            what="the pool's pods sampled",
        )
        prometheus.stop()
        stopped = time.time()
        pools.patch_spec(POOL, {"roles": {"mixed": {"minReplicas": 1}}})
        unavailable = wait_for(
            lambda: condition_is(pools, POOL, "MetricsAvailable", "False"),
            timeout_s=10,
            what="MetricsAvailable=False",
        )
        assert "cannot connect" in unavailable["message"]
        held_from = time.time()
        wait_ticks(audit, pools.namespace, POOL, OPERATOR, HELD_TICKS, held_from)

        assert pools.replicas(POOL, "mixed") == 2
        during = [
            d for d in pools.decisions(POOL, "mixed", "replicas") if record_time(d) >= stopped
        ]
        assert during, "the outage left a decision record"
        assert {d["reason"] for d in during} <= {"MetricsMissing", "MetricsStale"}
        assert not any(d["applied"] for d in during)
        writes = [r for r in audit.by(OPERATOR, stopped) if "/deployments/" in r.path]
        assert [r for r in writes if r.method != "GET"] == []
        warnings = pools.events(POOL, "MetricsUnavailable")
        assert [e["type"] for e in warnings] == ["Warning"]
        assert not condition_is(pools, POOL, "Ready", "True")

        prometheus.start()  # same port, same data
        wait_for(
            lambda: condition_is(pools, POOL, "MetricsAvailable", "True"),
            timeout_s=30,
            what="MetricsAvailable=True again",
        )
        wait_for(
            lambda: pools.replicas(POOL, "mixed") == 1,
            timeout_s=20,
            what="the held scale-down, once metrics are back",
        )
        applied = [d for d in pools.decisions(POOL, "mixed", "replicas") if d["applied"]]
        assert [(d["from"], d["to"], d["reason"]) for d in applied] == [
            (2, 1, "InteractiveBackpressureLow")
        ]
        assert len(pools.events(POOL, "MetricsUnavailable")) == 1
    finally:
        pools.delete(POOL)


def test_api_calls_are_allowed_by_the_chart(live: Env) -> None:
    grants = chart_grants(namespaced_values([live.pools.namespace]))
    assert denied(live.stack.audit.by(OPERATOR), grants) == []
