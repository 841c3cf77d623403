"""KubeClient, the operator's I/O, against the dev cluster's API server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chiron_operator.api import parse_spec
from chiron_operator.core.enums import Role
from chiron_operator.devcluster.cluster.apiserver import ApiServerHandle, write_kubeconfig
from chiron_operator.devcluster.cluster.processes import free_port
from chiron_operator.devcluster.cluster.resources import group_version
from chiron_operator.kube import (
    ConflictReason,
    EventType,
    KubeApiError,
    KubeClient,
    build_services,
    deletion_costs,
    find_conflicts,
    max_num_seqs_patch,
)
from chiron_operator.kube.client import ROLE_BINDINGS, SERVICE_ACCOUNTS
from chiron_operator.kube.gateway import build_gateway_role_binding, build_gateway_service_account
from tests.kube.support import SPEC, container, deployment

NS = "llm"


@pytest.fixture
async def ns(kube: KubeClient) -> str:
    """The namespace, holding the pool that owns what the tests create."""
    await run(kube.request, "POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
    return NS


@pytest.fixture
async def uid(kube: KubeClient, ns: str) -> str:
    pools = f"/apis/chiron.io/v1alpha1/namespaces/{ns}/llmservingpools"
    pool = await run(kube.request, "POST", pools, body={"metadata": {"name": "llama-70b"}})
    return str(pool["metadata"]["uid"])


async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_apply_creates_then_patches(kube: KubeClient, ns: str, uid: str) -> None:
    created = await run(kube.apply_deployment, deployment(Role.MIXED, replicas=2, seqs=64, uid=uid))
    assert created["metadata"]["generation"] == 1
    again = await run(kube.apply_deployment, deployment(Role.MIXED, replicas=3, seqs=64, uid=uid))
    assert again["metadata"]["uid"] == created["metadata"]["uid"]
    assert again["spec"]["replicas"] == 3
    assert again["metadata"]["annotations"]["chiron.io/applied-replicas"] == "3"
    assert container(again) == container(created)

    patched = await run(
        kube.patch_deployment,
        ns,
        "llama-70b-mixed",
        max_num_seqs_patch(container(again)["args"], 8),
    )
    assert container(patched)["image"] == "vllm/vllm-openai:v0.11.0"
    assert "8" in container(patched)["args"]
    scaled = await run(kube.scale_deployment, ns, "llama-70b-mixed", 0)
    assert scaled["spec"]["replicas"] == 0
    assert scaled["metadata"]["annotations"]["chiron.io/applied-replicas"] == "0"


async def test_services_and_listing_by_pool(kube: KubeClient, ns: str, uid: str) -> None:
    for service in build_services("llama-70b", ns, uid, parse_spec(SPEC)):
        await run(kube.apply_service, service)
        await run(kube.apply_service, service)  # idempotent
    for role in Role:
        await run(kube.apply_deployment, deployment(role, uid=uid))
    other = {
        **deployment(),
        "metadata": {
            **deployment()["metadata"],
            "name": "x",
            "labels": {"chiron.io/pool": "other"},
        },
    }
    await run(kube.request, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body=other)
    listed = await run(kube.list_deployments, ns, "llama-70b")
    assert sorted(d["metadata"]["name"] for d in listed) == [
        "llama-70b-batch",
        "llama-70b-interactive",
        "llama-70b-mixed",
    ]
    assert await run(kube.get_deployment, ns, "missing") is None


async def test_gateway_accounts_and_bindings_by_name(kube: KubeClient, ns: str, uid: str) -> None:
    """Get, create, patch and delete by collection; the pool's deletion takes them along."""
    account = build_gateway_service_account("llama-70b", ns, uid)
    binding = build_gateway_role_binding("llama-70b", ns, uid, cluster_role="chiron-gateway")
    name = "llama-70b-gateway"
    for collection, body in ((SERVICE_ACCOUNTS, account), (ROLE_BINDINGS, binding)):
        assert await run(kube.get_named, collection, ns, name) is None
        created = await run(kube.create_in, collection, body)
        with pytest.raises(KubeApiError) as taken:
            await run(kube.create_in, collection, body)
        assert taken.value.conflict
        patch = {"metadata": {"labels": {"team": "llm"}}}
        patched = await run(kube.patch_named, collection, ns, name, patch)
        assert patched["metadata"]["labels"]["team"] == "llm"
        assert patched["metadata"]["uid"] == created["metadata"]["uid"]
    found = await run(kube.get_named, ROLE_BINDINGS, ns, name)
    assert found["roleRef"]["name"] == "chiron-gateway"
    assert await run(kube.delete_named, ROLE_BINDINGS, ns, name) is True
    assert await run(kube.delete_named, ROLE_BINDINGS, ns, name) is False
    pools = f"/apis/chiron.io/v1alpha1/namespaces/{ns}/llmservingpools/llama-70b"
    await run(kube.request, "DELETE", pools)
    assert await run(kube.get_named, SERVICE_ACCOUNTS, ns, name) is None


async def test_pods_by_role_and_deletion_costs(kube: KubeClient, ns: str) -> None:
    template = deployment(Role.BATCH)["spec"]["template"]
    for name in ("b1", "b2", "b3"):
        pod = {"metadata": {**template["metadata"], "name": name}, "spec": template["spec"]}
        await run(kube.request, "POST", f"/api/v1/namespaces/{ns}/pods", body=pod)
    pods = await run(kube.list_pods, ns, "llama-70b", Role.BATCH)
    assert len(pods) == 3
    assert await run(kube.list_pods, ns, "llama-70b", Role.MIXED) == []

    costs = deletion_costs({"b1": 5.0, "b2": 0.0, "b3": 1.0}, 1)
    assert await run(kube.apply_deletion_costs, ns, pods, costs) == ["b2"]
    pods = await run(kube.list_pods, ns, "llama-70b")
    assert await run(kube.apply_deletion_costs, ns, pods, costs) == []  # nothing to change
    # The next scale-down targets another pod: the old mark is removed, not left behind.
    moved = deletion_costs({"b1": 5.0, "b2": 9.0, "b3": 1.0}, 1)
    assert sorted(await run(kube.apply_deletion_costs, ns, pods, moved)) == ["b2", "b3"]
    annotations = {
        p["metadata"]["name"]: p["metadata"]["annotations"].get(
            "controller.kubernetes.io/pod-deletion-cost"
        )
        for p in await run(kube.list_pods, ns, "llama-70b")
    }
    assert annotations == {"b1": None, "b2": None, "b3": "-1"}


async def test_conflicts_from_live_objects(kube: KubeClient, ns: str, uid: str) -> None:
    await run(kube.apply_deployment, deployment(Role.MIXED, replicas=2, uid=uid))
    await run(kube.apply_deployment, deployment(Role.BATCH, replicas=1, uid=uid))
    hpa = {
        "metadata": {"name": "kv"},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "llama-70b-mixed",
            },
            "minReplicas": 1,
            "maxReplicas": 4,
        },
    }
    await run(
        kube.request,
        "POST",
        f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
        body=hpa,
    )
    keda = {"metadata": {"name": "queue"}, "spec": {"scaleTargetRef": {"name": "llama-70b-batch"}}}
    await run(
        kube.request, "POST", f"/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects", body=keda
    )
    # Someone scales the batch role through the scale subresource, as `kubectl scale` does.
    await run(
        kube.request,
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/deployments/llama-70b-batch/scale",
        body={"spec": {"replicas": 4}},
        content_type="application/merge-patch+json",
    )

    found = find_conflicts(
        await run(kube.list_deployments, ns, "llama-70b"),
        await run(kube.list_hpas, ns),
        await run(kube.list_scaled_objects, ns),
    )
    assert sorted((c.reason, c.deployment) for c in found) == [
        (ConflictReason.HPA_TARGETS_DEPLOYMENT, "llama-70b-mixed"),
        (ConflictReason.REPLICAS_CHANGED_EXTERNALLY, "llama-70b-batch"),
        (ConflictReason.SCALED_OBJECT_TARGETS_DEPLOYMENT, "llama-70b-batch"),
    ]


async def test_scaled_objects_without_keda(
    apiserver: ApiServerHandle, kube: KubeClient, ns: str
) -> None:
    keda = next(r for r in apiserver.emulator.resources if r.group == "keda.sh")
    del apiserver.emulator.resources[keda]
    assert group_version(keda) == "keda.sh/v1alpha1"
    assert await run(kube.list_scaled_objects, ns) == []


async def test_events_about_the_pool(kube: KubeClient, ns: str) -> None:
    event = await run(
        kube.post_event,
        ns,
        "llama-70b",
        "pool-uid",
        reason="ScaledUp",
        message="x" * 2000,
        event_type=EventType.WARNING,
    )
    assert event["involvedObject"] == {
        "apiVersion": "chiron.io/v1alpha1",
        "kind": "LLMServingPool",
        "name": "llama-70b",
        "namespace": ns,
        "uid": "pool-uid",
    }
    assert (event["type"], event["reason"], event["count"]) == ("Warning", "ScaledUp", 1)
    assert len(event["message"]) == 1024
    assert event["metadata"]["name"].startswith("llama-70b.")
    listed = await run(
        kube.request,
        "GET",
        f"/api/v1/namespaces/{ns}/events",
        query={"fieldSelector": "involvedObject.name=llama-70b"},
    )
    assert [e["reason"] for e in listed["items"]] == ["ScaledUp"]


async def test_errors_are_translated(kube: KubeClient) -> None:
    with pytest.raises(KubeApiError) as missing:
        await run(kube.patch_deployment, "default", "missing", {"spec": {"replicas": 1}})
    assert missing.value.not_found
    assert missing.value.reason == "NotFound"
    with pytest.raises(KubeApiError) as taken:
        body = {"metadata": {"name": "x"}}
        for _ in range(2):
            await run(kube.request, "POST", "/api/v1/namespaces/default/configmaps", body=body)
    assert taken.value.conflict


async def test_construction_from_the_environment(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with KubeClient.from_environment(kubeconfig) as client:
        assert await run(client.list_hpas, "default") == []
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with KubeClient.from_environment() as client:
        assert await run(client.list_scaled_objects, "default") == []


def test_an_unreachable_server_is_an_api_error(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{free_port()}")
    with KubeClient.from_kubeconfig(config) as client:
        client._api_client.configuration.retries = 0
        with pytest.raises(KubeApiError) as failed:
            client.list_hpas("default")
    assert failed.value.status == 0
