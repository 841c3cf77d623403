"""The operator's side of a pool's Prometheus: whose token goes where, what PromQL runs, and
that pools whose Prometheus hangs cannot starve the others.

At the tick's fetch (`tick._fetch_metrics`, what `run_tick` calls each interval) against real
HTTP servers on loopback; the Kubernetes client is never reached (no pool names a Secret).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from ipaddress import ip_network
from typing import Any, cast

import pytest

from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.kube import KubeClient
from chiron_operator.metrics import PoolMetrics
from chiron_operator.metrics.batch_queue import PROMQL_REFUSED
from chiron_operator.metrics.destination import DestinationPolicy
from chiron_operator.operator.context import OperatorContext, PoolRef, PrometheusSettings
from chiron_operator.operator.fetching import FetchLimiter
from chiron_operator.operator.main import parse_args
from chiron_operator.operator.prometheus_flags import prometheus_settings
from chiron_operator.operator.tick import _fetch_metrics
from tests.metrics.recorder import EMPTY_VECTOR, Recorder, queries_of, reply
from tests.operator.harness import pool_spec

NAMESPACE = "llm"
LOOPBACK = DestinationPolicy((ip_network("127.0.0.0/8"),))
RAW = "sum by (deadline) (my_queue)"


def context(settings: PrometheusSettings, fetches: FetchLimiter | None = None) -> OperatorContext:
    return OperatorContext(
        kube=cast(KubeClient, object()),
        prometheus=settings,
        fetches=fetches or FetchLimiter(),
    )


def spec(url: str, **override: Any) -> LLMServingPoolSpec:
    return LLMServingPoolSpec.model_validate(pool_spec(url, **override))


def fetch(ctx: OperatorContext, pool: str, url: str, **override: Any) -> PoolMetrics:
    ref = PoolRef(NAMESPACE, pool, f"uid-{pool}")
    return asyncio.run(_fetch_metrics(ctx, ref, spec(url, **override)))


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    started = [Recorder(reply(200, EMPTY_VECTOR)) for _ in range(2)]
    yield started
    for server in started:
        server.close()


def test_the_operator_token_goes_only_to_allowed_urls(recorders: list[Recorder]) -> None:
    allowed, other = recorders
    ctx = context(PrometheusSettings("op-token", (allowed.url,), LOOPBACK))
    assert fetch(ctx, "trusted", allowed.url).error == ""
    assert len(allowed.requests) == 7
    assert {h.get("Authorization") for _, h in allowed.requests} == {"Bearer op-token"}
    refused = fetch(ctx, "tenant", other.url)
    assert "spec.prometheus.authSecretRef" in refused.error
    assert "--prometheus-token-url" in refused.error
    assert other.requests == []  # refused before any request, token or not
    # With no operator token there is nothing to keep: the pool's fetch goes unauthenticated.
    anonymous = context(PrometheusSettings(None, (), LOOPBACK))
    assert fetch(anonymous, "tenant", other.url).error == ""
    assert [h.get("Authorization") for _, h in other.requests] == [None] * 7


def test_loopback_needs_the_allow_flag(recorders: list[Recorder]) -> None:
    server = recorders[0]
    refused = fetch(context(PrometheusSettings()), "pool", server.url)
    assert "a loopback address" in refused.error
    assert server.requests == []


def test_raw_promql_runs_only_with_the_opt_in(recorders: list[Recorder]) -> None:
    server = recorders[0]
    queue = {"batchQueue": {"queuedRequestsQuery": RAW}}
    refused = fetch(context(PrometheusSettings(destinations=LOOPBACK)), "pool", server.url, **queue)
    assert refused.queue is not None
    assert refused.queue.error == PROMQL_REFUSED
    assert RAW not in queries_of(server)
    opted_in = PrometheusSettings(destinations=LOOPBACK, allow_pool_promql=True)
    honoured = fetch(context(opted_in), "pool", server.url, **queue)
    assert honoured.queue is not None
    assert honoured.queue.error == ""
    assert queries_of(server)[-1] == RAW


def test_flags_and_their_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = prometheus_settings(parse_args([]), "t")
    assert settings.token_urls == ()
    assert settings.token_for("http://prom:9090") is None
    assert not settings.allow_pool_promql
    flags = [
        "--prometheus-token-url=http://prom.monitoring.svc:9090",
        "--prometheus-allow-cidr=127.0.0.0/8",
        "--allow-pool-promql",
        "--prometheus-deadline-s=3",
    ]
    settings = prometheus_settings(parse_args(flags), "t")
    assert settings.token_for("http://prom.monitoring.svc:9090") == "t"
    assert settings.destinations.allowed_networks == (ip_network("127.0.0.0/8"),)
    assert settings.allow_pool_promql
    assert settings.deadline_s == 3.0
    monkeypatch.setenv("CHIRON_PROMETHEUS_TOKEN_URLS", "http://a:9090, https://b/prom")
    monkeypatch.setenv("CHIRON_PROMETHEUS_ALLOW_CIDRS", "10.0.0.0/8")
    settings = prometheus_settings(parse_args([]), "t")
    assert settings.token_urls == ("http://a:9090", "https://b/prom")
    assert settings.destinations.allowed_networks == (ip_network("10.0.0.0/8"),)
    with pytest.raises(SystemExit):
        parse_args(["--prometheus-token-url=http://user:pw@prom:9090"])


def test_one_fetch_per_pool_and_a_bound_per_namespace() -> None:
    release = threading.Event()

    def hang() -> PoolMetrics:
        release.wait(10)
        return PoolMetrics()

    async def scenario() -> list[str]:
        limiter = FetchLimiter(workers=8, per_namespace=2)
        errors = []
        for pool in ("a", "a", "b", "c"):
            found = await limiter.run("ns", pool, hang, deadline_s=0.0, now_s=0.0)
            errors.append(found.error)
        other = await limiter.run("other", "d", PoolMetrics, deadline_s=1.0, now_s=0.0)
        errors.append(other.error)
        release.set()
        await asyncio.sleep(0.2)  # the threads end and free their pools
        again = await limiter.run("ns", "a", PoolMetrics, deadline_s=1.0, now_s=0.0)
        errors.append(again.error)
        limiter.close()
        return errors

    errors = asyncio.run(scenario())
    assert errors[0] == "the Prometheus fetch did not end within its 0 s deadline"
    assert errors[1] == "the pool's previous Prometheus fetch is still running: skipped"
    assert errors[2] == "the Prometheus fetch did not end within its 0 s deadline"
    assert errors[3] == "2 Prometheus fetches of namespace ns are in flight already: skipped"
    assert errors[4:] == ["", ""]  # another namespace, and a pool whose thread ended


HUNG_POOLS = 12
INTERVAL_S = 0.5
WINDOW_S = 6.0
DEADLINE_S = 2.0


async def _control_loop(
    ctx: OperatorContext, pool: str, url: str, stop: asyncio.Event, fresh: list[float]
) -> None:
    """A pool's daemon as `handlers.control_loop` runs it: a fetch every interval."""
    ref, pool_spec_ = PoolRef(NAMESPACE, pool, pool), spec(url)
    while not stop.is_set():
        started = time.monotonic()
        metrics = await _fetch_metrics(ctx, ref, pool_spec_)
        if not metrics.error:
            fresh.append(time.monotonic())
        await asyncio.sleep(max(0.0, INTERVAL_S - (time.monotonic() - started)))


def healthy_fresh_ticks(fetches: FetchLimiter, healthy_url: str, hung_url: str) -> list[float]:
    ctx = context(PrometheusSettings(destinations=LOOPBACK, deadline_s=DEADLINE_S), fetches)

    async def run() -> list[float]:
        stop, fresh, ignored = asyncio.Event(), list[float](), list[float]()
        loops = [
            asyncio.create_task(_control_loop(ctx, f"hung-{i}", hung_url, stop, ignored))
            for i in range(HUNG_POOLS)
        ]
        await asyncio.sleep(0.1)  # the hung pools' fetches are in flight first
        loops.append(asyncio.create_task(_control_loop(ctx, "healthy", healthy_url, stop, fresh)))
        await asyncio.sleep(WINDOW_S)
        stop.set()
        await asyncio.gather(*loops)
        assert ignored == []
        return fresh

    try:
        return asyncio.run(run())
    finally:
        fetches.close()


def test_hung_pools_leave_a_healthy_pool_on_time(recorders: list[Recorder]) -> None:
    healthy = recorders[0]
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)  # accepts, never answers
    hung_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        fresh = healthy_fresh_ticks(FetchLimiter(), healthy.url, hung_url)
        # What a small shared pool of threads did: the healthy pool waited behind hung fetches.
        starved = healthy_fresh_ticks(FetchLimiter(workers=4), healthy.url, hung_url)
    finally:
        listener.close()
    expected = WINDOW_S / INTERVAL_S
    assert len(fresh) >= expected - 2, fresh
    gaps = [later - earlier for earlier, later in itertools.pairwise(fresh)]
    assert max(gaps) < 2 * INTERVAL_S, gaps
    assert len(starved) <= expected / 3, starved
