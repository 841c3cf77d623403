"""Load rises: mixed replicas go up within one tick of the scrape that shows it. Load falls:
they come down again, one at a time, once the stabilisation window has passed.

One run of a real pool (emulated vLLM pods, Prometheus scraping every second, the operator
ticking every second) is recorded by the module fixture; the tests read the record, the
Deployment, the pool's status, Prometheus' samples and the API server's audit log.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.operator.conftest import OPERATOR, Env
from tests.operator.harness import (
    INTERVAL_S,
    SCRAPE_S,
    Load,
    condition_is,
    pool_spec,
    record_time,
    wait_for,
)
from tests.operator.rbac_check import chart_grants, denied, namespaced_values, used

POOL = "surge"
STABILIZATION_S = 5.0
CONCURRENCY = 12  # two pods of 4 sequences: every one runs 4 and queues 2


@dataclass(frozen=True)
class Run:
    load_on_s: float
    scaled_up_s: float
    load_off_s: float
    scaled_down_s: float
    original_pods: tuple[str, ...]


def _sampled(env: Env) -> bool:
    signals = env.pools.status(POOL).get("signals") or {}
    fresh = condition_is(env.pools, POOL, "MetricsAvailable", "True")
    return bool(fresh) and signals.get("interactiveBackpressureRatio") is not None


@pytest.fixture(scope="module")
def run(live: Env) -> Iterator[Run]:
    pools = live.pools
    spec = pool_spec(
        live.prometheus.url,
        tuning={"guards": {"scaleDownStabilizationS": STABILIZATION_S}},
        # The load goes straight to the pods: this is the pool without its gateway.
        gateway={"enabled": False},
    )
    pools.create(POOL, spec)
    load = Load(live.stack, pools.namespace, POOL, concurrency=CONCURRENCY)
    try:
        wait_for(lambda: _sampled(live), timeout_s=30, what="both pods sampled by the operator")
        original = tuple(sorted(p["metadata"]["name"] for p in pools.pods(POOL)))
        load_on = time.time()
        load.start()
        wait_for(lambda: pools.replicas(POOL, "mixed") == 3, timeout_s=20, what="scale-up to 3")
        scaled_up = time.time()
        load.stop()
        load_off = time.time()
        wait_for(
            lambda: pools.replicas(POOL, "mixed") == 1,
            timeout_s=4 * STABILIZATION_S + 20,
            what="scale-down back to 1",
        )
        yield Run(load_on, scaled_up, load_off, time.time(), original)
    finally:
        load.stop()
        pools.delete(POOL)


def _replica_patches(env: Env, since: float) -> list[float]:
    path = f"/apis/apps/v1/namespaces/{env.pools.namespace}/deployments/{POOL}-mixed"
    return [
        r.time_s
        for r in env.stack.audit.by(OPERATOR, since)
        if r.method == "PATCH" and r.path == path
    ]


def _first_busy_scrape(env: Env, run: Run) -> float:
    """When the last of the original pods first showed queued requests (a scrape timestamp)."""
    selector = f'namespace="{env.pools.namespace}",pod=~"{POOL}-(interactive|mixed)-.*"'
    series = env.prometheus.query(f"vllm:num_requests_waiting{{{selector}}}[5m]")
    firsts = {}
    for found in series:
        pod = found["metric"]["pod"]
        busy = [float(t) for t, v in found["values"] if float(t) >= run.load_on_s and float(v) > 0]
        if pod in run.original_pods and busy:
            firsts[pod] = min(busy)
    assert set(firsts) == set(run.original_pods), series
    return max(firsts.values())


def test_load_rise_adds_mixed_replicas_within_one_tick_of_the_busy_scrape(
    live: Env, run: Run
) -> None:
    ups = [
        d
        for d in live.pools.decisions(POOL, "mixed", "replicas")
        if d["applied"] and d["to"] > d["from"]
    ]
    assert [(d["from"], d["to"], d["reason"]) for d in ups] == [
        (1, 3, "InteractiveBackpressureHigh")
    ]
    # Every original pod had requests waiting: each counts at least one busy instance.
    found = re.search(r"interactive backpressure (\d+\.\d+) > 0\.80", ups[0]["message"])
    assert found is not None and float(found.group(1)) >= 1.0, ups[0]["message"]
    busy_s = _first_busy_scrape(live, run)
    changed_s = _replica_patches(live, run.load_on_s)[0]
    assert changed_s <= run.scaled_up_s
    delay_s = changed_s - busy_s
    assert 0 < delay_s <= INTERVAL_S + SCRAPE_S, delay_s


def test_load_fall_removes_what_the_load_no_longer_needs_after_the_stabilisation_window(
    live: Env, run: Run
) -> None:
    decisions = [
        d
        for d in live.pools.decisions(POOL, "mixed", "replicas")
        if record_time(d) >= run.load_off_s
    ]
    downs = [d for d in decisions if d["applied"]]
    # Idle, the pool needs one instance: both extra mixed ones go, one per tick (the guard
    # rails' step), not one per stabilisation window.
    assert [(d["from"], d["to"], d["reason"]) for d in downs] == [
        (3, 2, "MaxStepLimited"),
        (2, 1, "InteractiveBackpressureLow"),
    ]
    assert "3 -> 1 limited to 2" in downs[0]["message"], downs[0]["message"]
    assert record_time(downs[1]) - record_time(downs[0]) <= 2 * INTERVAL_S
    first_down = record_time(downs[0])
    held = [d for d in decisions if record_time(d) < first_down]
    assert any(d["reason"] == "ScaleDownStabilization" for d in held), held
    # The window still held the loaded ticks' recommendations (the last one a scrape after
    # the load stopped), so nothing went before it passed.
    assert first_down - run.load_off_s >= STABILIZATION_S - INTERVAL_S
    # Each removal marked its victim first (pod-deletion-cost), so the ReplicaSet removes the
    # idle pod the operator chose rather than the newest.
    pod_marks = [
        r.time_s
        for r in live.stack.audit.by(OPERATOR, run.load_off_s)
        if r.method == "PATCH" and "/pods/" in r.path
    ]
    for patched in _replica_patches(live, run.load_off_s):
        assert any(mark <= patched for mark in pod_marks)
    assert live.pools.replicas(POOL, "interactive") == 1


def test_api_calls_are_allowed_by_the_chart(live: Env, run: Run) -> None:
    calls = live.stack.audit.by(OPERATOR)
    assert ("", "pods", "patch") in used(calls)  # the deletion-cost marks were exercised
    grants = chart_grants(namespaced_values([live.pools.namespace]))
    assert denied(calls, grants) == []
