"""The gateway in a tick's outcome: status names the endpoint and the gateway's readiness, and
the gateway's Deployment is neither a role nor a target of conflict detection. Pure."""

from __future__ import annotations

from typing import Any

from chiron_operator.api import PoolStatus, parse_spec
from chiron_operator.core.enums import Role
from chiron_operator.kube.gateway import build_gateway_deployment
from chiron_operator.metrics import PoolMetrics
from chiron_operator.operator.context import PoolRef
from chiron_operator.operator.objects import ClusterState
from chiron_operator.operator.outcome import TickInputs, evaluate
from tests.operator.ticks import NAMESPACE, POOL, PureTicks, observe_pool

Json = dict[str, Any]
REF = PoolRef(NAMESPACE, POOL, "uid")


def _gateway_pod(index: int, *, ready: bool) -> Json:
    spec = parse_spec(observe_pool().spec)
    deployment = build_gateway_deployment(POOL, NAMESPACE, "uid", spec, image="img")
    metadata = deployment["spec"]["template"]["metadata"]
    return {
        "metadata": {"name": f"{POOL}-gateway-abc-{index}", "namespace": NAMESPACE, **metadata},
        "status": {"conditions": [{"type": "Ready", "status": str(ready)}]},
    }


def _status(pool: PureTicks, extra: list[Json], pods: list[Json], ref: PoolRef | None) -> Any:
    spec = parse_spec(pool.spec)
    cluster = pool.cluster()
    state = ClusterState([*cluster.deployments, *extra], [*cluster.pods, *pods], [], [])
    metrics = PoolMetrics(fetched_at_s=pool.now_s)
    inputs = TickInputs(spec, spec.to_tuning(), state, metrics, PoolStatus(), pool.now_s, 1, ref)
    return evaluate(inputs)


def test_status_names_the_endpoint_and_counts_ready_gateway_pods() -> None:
    store = {"type": "PostgreSQL", "postgresql": {"urlSecretRef": {"name": "gateway-store"}}}
    pool = observe_pool(gateway={"replicas": 2, "store": store})
    gateway = build_gateway_deployment(POOL, NAMESPACE, "uid", parse_spec(pool.spec), image="i")
    pods = [_gateway_pod(0, ready=True), _gateway_pod(1, ready=False)]
    outcome = _status(pool, [gateway], pods, REF)
    wire = outcome.status.model_dump(mode="json", by_alias=True)
    assert wire["gateway"] == {
        "endpoint": f"http://{POOL}.{NAMESPACE}.svc:80",
        "replicas": 2,
        "readyReplicas": 1,
    }
    # Its Deployment and pods are no role's: the pool's counts are the vLLM pods' alone.
    assert set(outcome.report.facts) == {Role.INTERACTIVE, Role.MIXED}
    assert outcome.status.roles.mixed.ready_replicas == 1


def test_a_gateway_not_created_yet_has_its_endpoint_and_nothing_ready() -> None:
    outcome = _status(observe_pool(), [], [], REF)
    assert outcome.status.gateway is not None
    assert (outcome.status.gateway.replicas, outcome.status.gateway.ready_replicas) == (0, 0)
    assert outcome.status.gateway.endpoint.startswith(f"http://{POOL}.")


def test_a_pool_without_gateway_has_none_in_status() -> None:
    pool = observe_pool(gateway={"enabled": False})
    assert _status(pool, [], [], REF).status.gateway is None
    assert _status(observe_pool(), [], [], None).status.gateway is None


def test_an_hpa_on_the_gateway_is_no_conflict_of_the_pool() -> None:
    pool = observe_pool()
    gateway = build_gateway_deployment(POOL, NAMESPACE, "uid", parse_spec(pool.spec), image="i")
    hpa = {
        "metadata": {"name": "gw", "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": f"{POOL}-gateway",
            }
        },
    }
    cluster = pool.cluster()
    state = ClusterState([*cluster.deployments, gateway], cluster.pods, [hpa], [])
    spec = parse_spec(pool.spec)
    inputs = TickInputs(
        spec,
        spec.to_tuning(),
        state,
        PoolMetrics(fetched_at_s=pool.now_s),
        PoolStatus(),
        pool.now_s,
        1,
        REF,
    )
    conflict = next(c for c in evaluate(inputs).status.conditions if c.type == "Conflict")
    assert conflict.status == "False"
