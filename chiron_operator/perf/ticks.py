"""CPU time of one pool's tick at a given pod count: the pure part and the whole operator.

Set-up for N pods: a dev-cluster API server holding the pool, its three Deployments and N Ready
pods; a fleet of N fake vLLM pods scraped by a real Prometheus; the pool in Enforce mode with
bounds pinned at the current sizes (so ticks decide, but never act).

- Whole tick: the real operator process (`python -m chiron_operator`, interval 2 s); its CPU
  time (user + system, from /proc) over ten ticks divided by the ticks it made, counted as the
  pool's status writes in the API server's audit log. kopf's own work for the pool (the watch
  event each status write causes) is included, as it is part of what a tick costs.
- Pure part: everything a tick computes between its reads and its writes (spec validation and
  parsing, the previous status, `outcome.evaluate`, the status document), timed with the
  thread's CPU clock on the inputs the operator really read, repeated and summarised by the
  median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from chiron_operator.api import check_spec, parse_spec
from chiron_operator.devcluster.cluster.operator_process import OperatorOptions, OperatorProcess
from chiron_operator.devcluster.cluster.processes import free_port
from chiron_operator.devcluster.cluster.prometheus import PrometheusProcess
from chiron_operator.devcluster.cluster.stack import DevStack, StackOptions
from chiron_operator.metrics import PoolMetrics, PrometheusSource
from chiron_operator.metrics.promql import PoolQuery
from chiron_operator.operator.context import PoolRef
from chiron_operator.operator.objects import ClusterState, read_cluster
from chiron_operator.operator.outcome import TickInputs, evaluate, previous_status
from chiron_operator.perf.cluster import (
    MODEL,
    NAMESPACE,
    OPERATOR,
    POOL,
    POOLS,
    populate,
    sd_path,
    start_prometheus,
    status_writes,
    wait_until,
)
from chiron_operator.perf.fleet import FakeFleet

WARMUP_TICKS: Final = 3
MEASURED_TICKS: Final = 10
PURE_REPEATS: Final = 30
SCRAPE_INTERVAL_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class TickCost:
    """What one tick of a pool of `pods` pods costs."""

    pods: int
    pure_cpu_ms: float
    tick_cpu_ms: float
    tick_wall_ms: float
    queries_per_tick: float
    api_calls_per_tick: float
    read_api_ms: float
    read_prometheus_ms: float
    series: int


def pure_tick(body: Mapping[str, Any], state: ClusterState, metrics: PoolMetrics) -> object:
    """The CPU-only steps of `tick.run_tick`, in its order, on what it read."""
    spec, _ = check_spec(body.get("spec") or {})
    assert spec is not None, "the benchmark's pool is valid"
    previous = previous_status(body)
    generation = int(body["metadata"].get("generation") or 0)
    inputs = TickInputs(spec, spec.to_tuning(), state, metrics, previous, time.time(), generation)
    outcome = evaluate(inputs)
    return outcome.status.model_dump(mode="json", by_alias=True)


def _pure_cpu_ms(stack: DevStack, prometheus: PrometheusProcess) -> tuple[float, float, float]:
    """(median pure CPU ms, API read wall ms, Prometheus fetch wall ms) on real inputs."""
    kube = stack.client("bench")
    body = kube.request("GET", f"{POOLS}/{POOL}")
    ref = PoolRef(NAMESPACE, POOL, str(body["metadata"]["uid"]))
    started = time.perf_counter()
    state = read_cluster(kube, ref)
    read_ms = (time.perf_counter() - started) * 1000
    with PrometheusSource(prometheus.url) as source:
        started = time.perf_counter()
        metrics = source.fetch(PoolQuery.from_spec(NAMESPACE, POOL, parse_spec(body["spec"])))
        fetch_ms = (time.perf_counter() - started) * 1000
    samples = []
    for _ in range(PURE_REPEATS):
        started = time.thread_time()
        pure_tick(body, state, metrics)
        samples.append((time.thread_time() - started) * 1000)
    return statistics.median(samples), read_ms, fetch_ms


def _operator_metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _whole_tick(stack: DevStack, workdir: Path) -> tuple[float, float, float, float]:
    """(CPU ms per tick, wall ms per tick, queries per tick, API calls per tick)."""
    options = OperatorOptions(stack.kubeconfig(OPERATOR), namespaces=(NAMESPACE,))
    with OperatorProcess(options, workdir / "operator.log") as operator:
        wait_until(lambda: len(status_writes(stack, 0.0)) >= WARMUP_TICKS, 60, "warm-up ticks")
        since, cpu = time.time(), operator.cpu_seconds()
        wait_until(lambda: len(status_writes(stack, since)) >= MEASURED_TICKS, 60, "measured ticks")
        cpu_s, ticks = operator.cpu_seconds() - cpu, len(status_writes(stack, since))
        calls = len(stack.audit.by(OPERATOR, since))
        text = operator.metrics_text()
    wall_s = _operator_metric(text, "chiron_reconcile_duration_seconds_sum")
    count = _operator_metric(text, "chiron_reconcile_duration_seconds_count")
    queries = _operator_metric(text, "chiron_prometheus_queries_per_tick")
    return 1000 * cpu_s / ticks, 1000 * wall_s / max(count, 1), queries, calls / ticks


def measure(pods: int, workdir: Path) -> TickCost:
    """Set up a pool of `pods` pods, measure its ticks, tear everything down."""
    options = StackOptions(workdir=workdir, namespaces=(NAMESPACE,), pods=False, prometheus=False)
    stack = DevStack(options)
    prometheus = PrometheusProcess(
        workdir / "prometheus",
        file_sd_paths=(sd_path(workdir),),
        scrape_interval_s=SCRAPE_INTERVAL_S,
        port=free_port(),
    )
    fleet: FakeFleet | None = None
    try:
        stack.start()
        fleet = FakeFleet(NAMESPACE, populate(stack, pods, prometheus.url), MODEL)
        stack.loop.run(fleet.start())
        start_prometheus(fleet, prometheus)
        series = len(prometheus.query(f'{{namespace="{NAMESPACE}"}}'))
        cpu_ms, wall_ms, queries, calls = _whole_tick(stack, workdir)
        pure_ms, read_ms, fetch_ms = _pure_cpu_ms(stack, prometheus)
    finally:
        if fleet is not None:
            stack.loop.run(fleet.stop())
        prometheus.stop()
        stack.stop()
    return TickCost(pods, pure_ms, cpu_ms, wall_ms, queries, calls, read_ms, fetch_ms, series)
