"""An admitted pool run the way the operator runs it, without a cluster: objects and ticks.

`run_pool` parses the stored spec as the tick does (`check_spec`), builds every object the
operator would create for it (role Deployments, Services, the gateway's objects), renders the
Prometheus queries, and runs pure ticks (`outcome.evaluate`, what `tick.run_tick` computes
between its reads and its writes) on synthetic metrics: missing, ordinary and extreme values,
each tick fed the previous tick's status. It returns every problem found; an exception is
one too, as it would be a traceback in the operator's tick.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any, Final

from chiron_operator.api import LLMServingPool, PoolStatus, check_spec
from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.core.enums import Role
from chiron_operator.kube import (
    build_deployment,
    build_gateway_deployment,
    build_gateway_role_binding,
    build_gateway_service,
    build_gateway_service_account,
    build_services,
    build_store_claim,
)
from chiron_operator.kube.labels import LABEL_POOL, LABEL_ROLE
from chiron_operator.metrics import PodMetrics, PoolMetrics, PoolQuery
from chiron_operator.metrics.results import OutputLengths, QueuedGroup, QueueMetrics
from chiron_operator.operator.context import PoolRef
from chiron_operator.operator.objects import ClusterState
from chiron_operator.operator.outcome import TickInputs, evaluate
from tests.api.kube_rules import object_problems

Json = dict[str, Any]
NAMESPACE: Final = "llm"
UID: Final = "0b5e4c1e-uid"
IMAGE: Final = "ghcr.io/chiron/chiron-operator:test"
TICKS: Final = 3
TICK_S: Final = 15.0
MAX_PODS_PER_ROLE: Final = 3
EXTREMES: Final = (0.0, 1e-300, 1e300, 1.7976931348623157e308, math.inf, math.nan, 5e-324)


def _replicas(spec: LLMServingPoolSpec, role: Role) -> int:
    bounds = spec.to_tuning().role_bounds(role)
    if bounds.max_replicas == 0:
        return 0
    return min(max(bounds.min_replicas, 1), MAX_PODS_PER_ROLE)


def build_objects(name: str, spec: LLMServingPoolSpec) -> list[Json]:
    """Every object the operator creates for the pool."""
    tuning = spec.to_tuning()
    objects = [
        build_deployment(
            name,
            NAMESPACE,
            UID,
            spec,
            role,
            replicas=_replicas(spec, role),
            max_num_seqs=tuning.role_bounds(role).initial_batch_size_seqs,
        )
        for role in Role
    ]
    objects += build_services(name, NAMESPACE, UID, spec)
    if spec.gateway.enabled:
        objects += [
            build_gateway_deployment(name, NAMESPACE, UID, spec, image=IMAGE),
            build_gateway_service(name, NAMESPACE, UID),
            build_gateway_service_account(name, NAMESPACE, UID),
            build_gateway_role_binding(name, NAMESPACE, UID, cluster_role="chiron-gateway"),
        ]
        claim = build_store_claim(name, NAMESPACE, UID, spec.gateway.store)
        if claim is not None:
            objects.append(claim)
    return objects


def _pods(name: str, deployments: list[Json]) -> list[Json]:
    pods = []
    for deployment in deployments:
        role = deployment["metadata"]["labels"].get(LABEL_ROLE)
        for index in range(int(deployment["spec"]["replicas"])):
            pods.append(
                {
                    "metadata": {
                        "name": f"{deployment['metadata']['name']}-7d9f-{index}",
                        "namespace": NAMESPACE,
                        "labels": {LABEL_POOL: name, LABEL_ROLE: role},
                    },
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }
            )
    return pods


def _signal(rng: random.Random, ordinary: float) -> float:
    draw = rng.random()
    if draw < 0.15:
        return math.nan
    if draw < 0.3:
        return rng.choice(EXTREMES)
    return ordinary * rng.uniform(0.0, 3.0)


def _pod_metrics(rng: random.Random) -> PodMetrics:
    return PodMetrics(
        running_requests=_signal(rng, 32.0),
        waiting_requests=_signal(rng, 4.0),
        kv_cache_usage_ratio=_signal(rng, 0.5),
        generation_tokens_per_s=_signal(rng, 1500.0),
        mean_itl_s=_signal(rng, 0.03),
        itl_s=_signal(rng, 0.04),
        itl_observations_per_s=_signal(rng, 500.0),
        ttft_s=_signal(rng, 0.4),
        ttft_observations_per_s=_signal(rng, 5.0),
        sample_age_s=rng.choice((1.0, 0.0, 30.0, math.inf, 1e300)),
        interactive_running_requests=_signal(rng, 8.0),
        gateway_cap_seqs=_signal(rng, 32.0),
    )


def _lengths(rng: random.Random) -> OutputLengths:
    return OutputLengths(
        _signal(rng, 2.0), _signal(rng, 300.0), _signal(rng, 200.0), _signal(rng, 500.0)
    )


def synthetic_metrics(rng: random.Random, pods: list[Json], now_s: float) -> PoolMetrics:
    """What a fetch could return: per-pod signals, queue and lengths, some missing or extreme."""
    if rng.random() < 0.1:
        return PoolMetrics(error="connection refused", fetched_at_s=now_s)
    deadlines = (now_s - 60.0, now_s + 1.0, now_s + 3600.0, now_s + 1e12, None)
    groups = tuple(
        QueuedGroup(rng.choice(deadlines), rng.choice((0, 1, 500, 10**9, 2**62)))
        for _ in range(rng.randint(0, 3))
    )
    return PoolMetrics(
        pods={str(p["metadata"]["name"]): _pod_metrics(rng) for p in pods},
        output_lengths={role: _lengths(rng) for role in Role if rng.random() < 0.7},
        queue=QueueMetrics(groups, sample_age_s=rng.choice((0.0, 5.0, math.inf))),
        gateway_lengths=_lengths(rng) if rng.random() < 0.5 else None,
        fetched_at_s=now_s,
    )


def _nonfinite(value: Any, path: str = "status") -> list[str]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _nonfinite(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _nonfinite(item, f"{path}[{i}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path} is {value}"]
    return []


def run_pool(stored: Json, rng: random.Random) -> list[str]:
    """Every problem running an admitted pool shows; empty when it runs cleanly."""
    spec, errors = check_spec(stored["spec"])
    if spec is None:
        return [f"models reject an admitted spec: {[e.message for e in errors]}"]
    LLMServingPool.model_validate(stored)
    name = str(stored["metadata"]["name"])
    PoolQuery.from_spec(NAMESPACE, name, spec).queries()
    objects = build_objects(name, spec)
    problems = [p for obj in objects for p in object_problems(obj)]
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    pods = _pods(name, deployments)
    cluster = ClusterState(deployments, pods, [], [])
    status: Json = {}
    now_s = 1.8e9
    ref = PoolRef(NAMESPACE, name, UID)
    for _ in range(TICKS):
        now_s += TICK_S
        metrics = synthetic_metrics(rng, pods, now_s)
        previous = PoolStatus.model_validate(status)
        inputs = TickInputs(spec, spec.to_tuning(), cluster, metrics, previous, now_s, 1, ref)
        outcome = evaluate(inputs)
        status = outcome.status.model_dump(mode="json", by_alias=True)
        problems += _nonfinite(status)
        if not problems:
            json.dumps(status, allow_nan=False)
    return problems
