"""A new pool gets its Deployments and Services from the real operator, as the spec says."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from chiron_operator.operator.context import DEFAULT_GATEWAY_IMAGE
from tests.operator.conftest import OPERATOR, Env
from tests.operator.harness import MODEL, fixed, pool_spec, wait_for
from tests.operator.rbac_check import chart_grants, denied, namespaced_values

POOL = "objects"
SEQS = {"interactive": 8, "mixed": 16, "batch": 128}
POSTGRESQL = {"type": "PostgreSQL", "postgresql": {"urlSecretRef": {"name": "gateway-store"}}}


@pytest.fixture(scope="module")
def created(plane: Env) -> Iterator[dict[str, Any]]:
    spec = pool_spec(
        plane.prometheus.url,
        template={
            "args": ["--max-model-len", "4096", "--enable-chunked-prefill"],
            "env": [{"name": "HF_HOME", "value": "/cache"}],
            "labels": {"team": "inference"},
        },
        roles={
            "interactive": fixed(1, 2, SEQS["interactive"]),
            "mixed": fixed(2, 3, SEQS["mixed"]),
            "batch": fixed(0, 2, SEQS["batch"]),
        },
    )
    pool = plane.pools.create(POOL, spec)
    try:
        wait_for(
            lambda: (
                len(plane.pools.deployments(POOL)) == 3
                and len(plane.pools.services(POOL)) == 3
                and len(plane.pools.gateway_objects(POOL)) == 4
            ),
            timeout_s=10,
            what="three Deployments, three Services and the gateway's objects",
        )
        yield pool
    finally:
        plane.pools.delete(POOL)


def _owner_is_the_pool(obj: dict[str, Any], pool: dict[str, Any]) -> None:
    assert obj["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "chiron.io/v1alpha1",
            "kind": "LLMServingPool",
            "name": POOL,
            "uid": pool["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


@pytest.mark.parametrize("role", ["interactive", "mixed", "batch"])
def test_one_deployment_per_role_with_the_operator_flags(
    plane: Env, created: dict[str, Any], role: str
) -> None:
    deployment = plane.pools.deployment(POOL, role)
    assert deployment is not None
    _owner_is_the_pool(deployment, created)
    labels = deployment["metadata"]["labels"]
    assert labels["chiron.io/pool"] == POOL
    assert labels["chiron.io/role"] == role
    assert labels["app.kubernetes.io/managed-by"] == "chiron-operator"
    spec = deployment["spec"]
    min_replicas = created["spec"]["roles"][role]["minReplicas"]
    assert spec["replicas"] == min_replicas
    assert spec["selector"]["matchLabels"] == {"chiron.io/pool": POOL, "chiron.io/role": role}
    template = spec["template"]
    assert template["metadata"]["labels"]["team"] == "inference"
    assert template["metadata"]["annotations"]["chiron.io/max-num-seqs"] == str(SEQS[role])
    (container,) = template["spec"]["containers"]
    assert container["command"] == ["vllm", "serve"]
    args = container["args"]
    assert args[0] == MODEL
    assert args[1:4] == ["--max-model-len", "4096", "--enable-chunked-prefill"]
    assert args[args.index("--max-num-seqs") + 1] == str(SEQS[role])
    assert args.count("--max-num-seqs") == 1
    priority = ["--scheduling-policy", "priority"]
    has_priority = any(args[i : i + 2] == priority for i in range(len(args)))
    assert has_priority is (role == "mixed")
    assert container["env"] == [{"name": "HF_HOME", "value": "/cache"}]


def test_services_select_the_pods_of_each_traffic_class(
    plane: Env, created: dict[str, Any]
) -> None:
    services = plane.pools.services(POOL)
    assert set(services) == {POOL, f"{POOL}-interactive", f"{POOL}-batch"}
    for request_class in ("interactive", "batch"):
        service = services[f"{POOL}-{request_class}"]
        _owner_is_the_pool(service, created)
        assert service["spec"]["selector"] == {
            "chiron.io/pool": POOL,
            f"chiron.io/serves-{request_class}": "true",
        }
    serves = {
        role: {k for k, v in d["spec"]["template"]["metadata"]["labels"].items() if v == "true"}
        for role, d in plane.pools.deployments(POOL).items()
    }
    assert serves == {
        "interactive": {"chiron.io/serves-interactive"},
        "mixed": {"chiron.io/serves-interactive", "chiron.io/serves-batch"},
        "batch": {"chiron.io/serves-batch"},
    }


def test_the_objects_are_the_operators(plane: Env, created: dict[str, Any]) -> None:
    """Created by the operator's identity, once each: no create-then-fix churn."""
    path = f"/apis/apps/v1/namespaces/{plane.pools.namespace}/deployments"
    posts = [r for r in plane.stack.audit.records if r.method == "POST" and r.path == path]
    assert {r.identity for r in posts} == {OPERATOR}
    names = {f"{POOL}-{role}" for role in SEQS}
    deployments = plane.pools.deployments(POOL)
    assert {d["metadata"]["name"] for d in deployments.values()} == names
    assert all(d["metadata"]["generation"] == 1 for d in deployments.values())


def test_the_gateway_is_the_pools_entrypoint(plane: Env, created: dict[str, Any]) -> None:
    found = plane.pools.gateway_objects(POOL)
    for obj in found.values():
        _owner_is_the_pool(obj, created)
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "gateway"
        assert "chiron.io/role" not in labels
    deployment = found["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{POOL}-gateway"
    (container,) = pod["containers"]
    assert container["command"] == ["chiron-gateway"]
    args = container["args"]
    assert args[:4] == ["--pool", POOL, "--namespace", plane.pools.namespace]
    assert container["image"] == os.environ.get("CHIRON_GATEWAY_IMAGE", DEFAULT_GATEWAY_IMAGE)
    service = found["Service"]["spec"]
    assert service["selector"] == {"chiron.io/pool": POOL, "app.kubernetes.io/component": "gateway"}
    assert service["ports"][0]["port"] == 80
    assert found["RoleBinding"]["roleRef"]["name"] == "chiron-gateway"
    assert found["RoleBinding"]["subjects"][0]["name"] == f"{POOL}-gateway"


def test_status_names_the_endpoint(plane: Env, created: dict[str, Any]) -> None:
    found = wait_for(
        lambda: plane.pools.status(POOL).get("gateway"), timeout_s=10, what="status.gateway"
    )
    # No pod runs on this cluster: the gateway Deployment exists, none of its pods is ready.
    assert found == {
        "endpoint": f"http://{POOL}.{plane.pools.namespace}.svc:80",
        "replicas": 1,
        "readyReplicas": 0,
    }


def test_the_sqlite_store_is_a_claim_one_gateway_pod_mounts(
    plane: Env, created: dict[str, Any]
) -> None:
    claim = plane.pools.store_claim(POOL)
    assert claim is not None
    _owner_is_the_pool(claim, created)
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
    deployment = plane.pools.gateway_objects(POOL)["Deployment"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "store", "persistentVolumeClaim": {"claimName": f"{POOL}-gateway-store"}} in (
        pod["volumes"]
    )
    args = pod["containers"][0]["args"]
    assert args[args.index("--store") + 1] == "sqlite:////var/lib/chiron-gateway/batches.db"


def _gateway_env(plane: Env, pool: str) -> list[str]:
    deployment = plane.pools.gateway_objects(pool).get("Deployment") or {}
    pod = (deployment.get("spec") or {}).get("template", {}).get("spec", {})
    return [e["name"] for e in (pod.get("containers") or [{}])[0].get("env", [])]


def test_disabling_the_gateway_removes_it_and_keeps_its_store(plane: Env) -> None:
    """Disabled, the gateway's objects go but the SQLite claim with its batches stays; enabled
    again on PostgreSQL, it runs three replicas without the claim's volume; back on SQLite, one
    without the Secret's variable. The claim goes with the pool."""
    pool = "objects-gateway"
    plane.pools.create(pool, pool_spec(plane.prometheus.url))
    try:
        wait_for(lambda: len(plane.pools.gateway_objects(pool)) == 4, timeout_s=10, what="gateway")
        assert plane.pools.store_claim(pool) is not None
        plane.pools.patch_spec(pool, {"gateway": {"enabled": False}})
        wait_for(
            lambda: (
                not plane.pools.gateway_objects(pool)
                and not plane.pools.status(pool).get("gateway")
            ),
            timeout_s=10,
            what="the gateway's objects and status gone",
        )
        # The pool itself is untouched: its role Deployments and class Services stay.
        assert set(plane.pools.deployments(pool)) == {"interactive", "mixed"}
        assert set(plane.pools.services(pool)) == {f"{pool}-interactive", f"{pool}-batch"}
        assert plane.pools.store_claim(pool) is not None
        plane.pools.patch_spec(
            pool, {"gateway": {"enabled": True, "replicas": 3, "store": POSTGRESQL}}
        )
        found = wait_for(
            lambda: plane.pools.gateway_objects(pool).get("Deployment"),
            timeout_s=10,
            what="the gateway back",
        )
        assert found["spec"]["replicas"] == 3
        assert found["spec"]["strategy"]["type"] == "RollingUpdate"
        assert [v["name"] for v in found["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
        assert _gateway_env(plane, pool) == ["POD_NAME", "CHIRON_GATEWAY_STORE"]
        sqlite = {"replicas": 1, "store": {"type": "SQLite", "postgresql": None}}
        plane.pools.patch_spec(pool, {"gateway": sqlite})
        wait_for(
            lambda: _gateway_env(plane, pool) == ["POD_NAME"],
            timeout_s=10,
            what="the gateway back on SQLite",
        )
        found = plane.pools.gateway_objects(pool)["Deployment"]
        assert found["spec"]["strategy"] == {"type": "Recreate"}
    finally:
        plane.pools.delete(pool)
    wait_for(lambda: plane.pools.store_claim(pool) is None, timeout_s=10, what="the claim deleted")


def test_a_role_with_max_zero_gets_no_deployment(plane: Env) -> None:
    spec = pool_spec(plane.prometheus.url)  # batch maxReplicas 0
    plane.pools.create("objects-nobatch", spec)
    try:
        wait_for(
            lambda: len(plane.pools.deployments("objects-nobatch")) == 2,
            timeout_s=10,
            what="the interactive and mixed Deployments",
        )
        assert set(plane.pools.deployments("objects-nobatch")) == {"interactive", "mixed"}
        assert plane.pools.deployment("objects-nobatch", "batch") is None
    finally:
        plane.pools.delete("objects-nobatch")


def test_api_calls_are_allowed_by_the_chart(plane: Env) -> None:
    grants = chart_grants(namespaced_values([plane.pools.namespace]))
    assert denied(plane.stack.audit.by(OPERATOR), grants) == []
