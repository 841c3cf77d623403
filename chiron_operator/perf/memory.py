"""Memory of one operator process serving many pools.

500 pools (default) in Observe mode, without pods, spread over 10 namespaces and served by one
operator with `--all-namespaces` (the chart's default), against the dev cluster's API server
and a real (empty) Prometheus: every pool runs its daemon, reads its objects and Prometheus,
and writes its status each tick, so everything the operator keeps per pool (kopf's cached
bodies and tasks, a Prometheus client, the status it last wrote, its telemetry series) is
there. The resident set size is read from /proc once every pool has ticked at least twice.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from chiron_operator.devcluster.cluster.operator_process import OperatorOptions, OperatorProcess
from chiron_operator.devcluster.cluster.resources import POOLS as POOL_RESOURCE
from chiron_operator.devcluster.cluster.stack import DevStack, StackOptions
from chiron_operator.perf.cluster import MODEL, OPERATOR, wait_until

MIB: Final = 1024 * 1024
NAMESPACES: Final = tuple(f"bench-{i}" for i in range(10))
STATUS: Final = re.compile(
    r"^/apis/chiron\.io/v1alpha1/namespaces/[^/]+/llmservingpools/[^/]+/status$"
)
INTERVAL_S: Final = 15.0
TICKS_EACH: Final = 2
TIMEOUT_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class MemoryCost:
    pools: int
    idle_rss_mib: float
    rss_mib: float
    peak_rss_mib: float
    settle_s: float
    cpu_ms_per_tick: float


def _spec(prometheus_url: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "mode": "Observe",
        "template": {"image": "vllm/vllm-openai:v0.11.0"},
        "roles": {
            "interactive": {"minReplicas": 1, "maxReplicas": 1},
            "mixed": {"minReplicas": 0, "maxReplicas": 0},
            "batch": {"minReplicas": 0, "maxReplicas": 0},
        },
        "prometheus": {"url": prometheus_url},
        "control": {"intervalS": INTERVAL_S},
    }


async def _create_pools(stack: DevStack, count: int, prometheus_url: str) -> None:
    spec = _spec(prometheus_url)
    for index in range(count):
        namespace = NAMESPACES[index % len(NAMESPACES)]
        body = {
            "apiVersion": "chiron.io/v1alpha1",
            "kind": "LLMServingPool",
            "metadata": {"name": f"pool-{index:04d}", "namespace": namespace},
            "spec": spec,
        }
        stack.server.store.create(POOL_RESOURCE, namespace, body)


class TickCounter:
    """Status writes per pool, counted incrementally from the audit log (it grows large)."""

    def __init__(self, stack: DevStack) -> None:
        self._records = stack.audit.records
        self._seen = 0
        self.per_pool: Counter[str] = Counter()

    def update(self) -> None:
        records = self._records
        end = len(records)
        for record in records[self._seen : end]:
            if (
                record.identity == OPERATOR
                and record.method == "PATCH"
                and STATUS.match(record.path)
            ):
                self.per_pool[record.path] += 1
        self._seen = end

    def all_ticked(self, pools: int, times: int) -> bool:
        self.update()
        return len(self.per_pool) >= pools and min(self.per_pool.values()) >= times

    def total(self) -> int:
        self.update()
        return sum(self.per_pool.values())


def measure(pools: int, workdir: Path) -> MemoryCost:
    """Start an operator, give it `pools` pools, and read its memory once all have ticked."""
    options = StackOptions(workdir=workdir, namespaces=NAMESPACES, pods=False)
    with DevStack(options) as stack:
        assert stack.prometheus is not None
        url = stack.prometheus.url
        operator_options = OperatorOptions(stack.kubeconfig(OPERATOR))
        with OperatorProcess(operator_options, workdir / "operator.log") as operator:
            time.sleep(2.0)
            idle = operator.rss_bytes()
            started = time.time()
            stack.call(lambda: _create_pools(stack, pools, url))
            ticks = TickCounter(stack)
            wait_until(lambda: ticks.all_ticked(pools, TICKS_EACH), TIMEOUT_S, "two ticks each")
            settled, cpu, before = time.time(), operator.cpu_seconds(), ticks.total()
            wait_until(lambda: ticks.all_ticked(pools, TICKS_EACH + 1), TIMEOUT_S, "a third")
            cpu_s, made = operator.cpu_seconds() - cpu, ticks.total() - before
            rss, peak = operator.rss_bytes(), operator.peak_rss_bytes()
    return MemoryCost(
        pools, idle / MIB, rss / MIB, peak / MIB, settled - started, 1000 * cpu_s / max(made, 1)
    )
