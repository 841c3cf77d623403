"""A dev cluster populated for a measurement: a pool, its Deployments and N Ready pods.

No kubelet runs: the pods are API objects only (Ready, owned by their Deployment, labelled as
the operator labels them), and their metrics come from a `FakeFleet` under the same names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from chiron_operator.api import parse_spec
from chiron_operator.core.enums import Role
from chiron_operator.devcluster.cluster import pods as pod_objects
from chiron_operator.devcluster.cluster.audit import AuditRecord
from chiron_operator.devcluster.cluster.objects import random_suffix
from chiron_operator.devcluster.cluster.prometheus import PrometheusProcess
from chiron_operator.devcluster.cluster.resources import PODS
from chiron_operator.devcluster.cluster.rollout import template_hash
from chiron_operator.devcluster.cluster.stack import DevStack
from chiron_operator.devcluster.cluster.store import Write
from chiron_operator.kube import build_deployment
from chiron_operator.perf.fleet import FakeFleet

NAMESPACE: Final = "bench"
POOL: Final = "bench"
OPERATOR: Final = "operator"
MODEL: Final = "meta-llama/Llama-3.1-8B-Instruct"
POOLS: Final = f"/apis/chiron.io/v1alpha1/namespaces/{NAMESPACE}/llmservingpools"
SEQS: Final = 32
MERGE: Final = "application/merge-patch+json"


def role_counts(pods: int) -> dict[Role, int]:
    """A quarter interactive, half mixed, the rest batch."""
    interactive, mixed = pods // 4, pods // 2
    return {
        Role.INTERACTIVE: interactive,
        Role.MIXED: mixed,
        Role.BATCH: pods - interactive - mixed,
    }


def pool_spec(pods: int, prometheus_url: str) -> dict[str, Any]:
    """Enforce, every bound pinned at the current size: ticks decide and never act."""
    roles = {
        role.value: {
            "minReplicas": count,
            "maxReplicas": count,
            "minBatchSizeSeqs": SEQS,
            "maxBatchSizeSeqs": SEQS,
            "initialBatchSizeSeqs": SEQS,
        }
        for role, count in role_counts(pods).items()
    }
    return {
        "model": MODEL,
        "mode": "Enforce",
        "template": {"image": "vllm/vllm-openai:v0.11.0"},
        "roles": roles,
        "prometheus": {"url": prometheus_url, "windowS": 30, "scrapeIntervalS": 2},
        "batchQueue": {"metric": {"name": "bench_queue", "matchers": {"pool": POOL}}},
        "control": {"intervalS": 2, "localIntervalS": 2},
    }


def pool_body(pods: int, prometheus_url: str, name: str = POOL) -> dict[str, Any]:
    return {
        "apiVersion": "chiron.io/v1alpha1",
        "kind": "LLMServingPool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": pool_spec(pods, prometheus_url),
    }


def populate(stack: DevStack, pods: int, prometheus_url: str) -> list[str]:
    """Create the pool, its Deployments and `pods` Ready pods; the pods' names."""
    kube = stack.client("bench")
    pool = kube.request("POST", POOLS, body=pool_body(pods, prometheus_url))
    spec = parse_spec(pool["spec"])
    wanted: list[tuple[dict[str, Any], str, str]] = []
    for role, count in role_counts(pods).items():
        body = build_deployment(
            POOL,
            NAMESPACE,
            str(pool["metadata"]["uid"]),
            spec,
            role,
            replicas=count,
            max_num_seqs=SEQS,
        )
        deployment = kube.create_deployment(body)
        hashed = template_hash(body["spec"]["template"])
        for _ in range(count):
            name = f"{POOL}-{role.value}-{hashed}-{random_suffix()}"
            wanted.append((deployment, name, hashed))
    stack.call(lambda: _create_pods(stack, wanted))
    return [name for _, name, _ in wanted]


async def _create_pods(stack: DevStack, wanted: list[tuple[dict[str, Any], str, str]]) -> None:
    store = stack.server.store
    info = store.info(PODS)
    for deployment, name, hashed in wanted:
        store.create(PODS, NAMESPACE, pod_objects.pod_body(deployment, name, hashed, 0))
        ready = {"conditions": [{"type": "Ready", "status": "True"}], "phase": "Running"}
        key = (PODS, NAMESPACE, name)
        store.write(Write(key, info, "status", {"status": ready}, MERGE))


def start_prometheus(fleet: FakeFleet, prometheus: PrometheusProcess) -> PrometheusProcess:
    """Point `prometheus` at the fleet and wait until every pod has been scraped."""
    assert prometheus.file_sd_paths, "the Prometheus must discover the fleet through file_sd"
    fleet.write_targets(prometheus.file_sd_paths[0])
    prometheus.start()
    promql = f'count(vllm:num_requests_running{{namespace="{NAMESPACE}"}})'
    wait_until(lambda: _count(prometheus, promql) >= len(fleet.pods), 60, "every pod scraped")
    return prometheus


def _count(prometheus: PrometheusProcess, promql: str) -> int:
    found = prometheus.query(promql)
    return int(float(found[0]["value"][1])) if found else 0


def status_writes(stack: DevStack, since_s: float, pool: str | None = POOL) -> list[AuditRecord]:
    """The operator's status writes (one per tick) since `since_s`, of one pool or of all."""
    suffix = f"/{pool}/status" if pool is not None else "/status"
    return [
        r
        for r in stack.audit.by(OPERATOR, since_s)
        if r.method == "PATCH" and r.path.startswith(POOLS) and r.path.endswith(suffix)
    ]


def wait_until(probe: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s} s: {what}")
        time.sleep(0.2)


def sd_path(workdir: Path) -> Path:
    return workdir / "file_sd" / "fleet.json"
