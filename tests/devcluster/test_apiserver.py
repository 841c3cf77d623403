"""The dev cluster's API server through the official kubernetes client: what kmock 0.8 lacks
or breaks (docs/TESTING.md) behaves as kube-apiserver does."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from chiron_operator.core.enums import Role
from chiron_operator.devcluster.cluster.apiserver import (
    ApiServerHandle,
    DevApiServer,
    start_apiserver,
    write_kubeconfig,
)
from chiron_operator.kube import KubeApiError, KubeClient, build_deployment
from tests.devcluster.support import pool_spec

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"
POOLS = "/apis/chiron.io/v1alpha1/namespaces/default/llmservingpools"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


async def call(kube: KubeClient, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    return await asyncio.to_thread(kube.request, method, path, **kwargs)


async def failure(kube: KubeClient, method: str, path: str, **kwargs: Any) -> KubeApiError:
    with pytest.raises(KubeApiError) as failed:
        await call(kube, method, path, **kwargs)
    return failed.value


def deployment(replicas: int = 1) -> dict[str, Any]:
    """The pool's mixed Deployment, without its owner (these tests are not about ownership:
    with an owner that does not exist, the garbage collector would delete it at once)."""
    built = build_deployment(
        "p1", "default", "uid-1", pool_spec(), Role.MIXED, replicas=replicas, max_num_seqs=8
    )
    del built["metadata"]["ownerReferences"]
    return built


def pod(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i"}], **spec},
    }


async def test_writes_stamp_metadata_and_bump_versions(kube: KubeClient) -> None:
    created = await call(kube, "POST", DEPLOYMENTS, body=deployment())
    meta = created["metadata"]
    assert (created["apiVersion"], created["kind"]) == ("apps/v1", "Deployment")
    assert meta["uid"] and meta["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    rv = int(meta["resourceVersion"])
    path = f"{DEPLOYMENTS}/p1-mixed"

    labelled = await call(
        kube, "PATCH", path, body={"metadata": {"labels": {"x": "y"}}}, content_type=MERGE
    )
    assert int(labelled["metadata"]["resourceVersion"]) > rv
    assert labelled["metadata"]["generation"] == 1  # metadata is not spec

    scaled = await call(kube, "PATCH", path, body={"spec": {"replicas": 3}}, content_type=MERGE)
    assert scaled["metadata"]["generation"] == 2

    same = await call(kube, "PATCH", path, body={"spec": {"replicas": 3}}, content_type=MERGE)
    assert same["metadata"]["resourceVersion"] == scaled["metadata"]["resourceVersion"]

    # With a status subresource, the object's endpoint ignores status and /status the rest.
    ignored = await call(kube, "PATCH", path, body={"status": {"replicas": 9}}, content_type=MERGE)
    assert "status" not in ignored
    status = await call(
        kube,
        "PATCH",
        f"{path}/status",
        body={"status": {"replicas": 9}, "spec": {"replicas": 7}},
        content_type=MERGE,
    )
    assert status["status"] == {"replicas": 9}
    assert status["spec"]["replicas"] == 3
    assert status["metadata"]["generation"] == 2


async def test_failed_json_patch_is_422_and_changes_nothing(kube: KubeClient) -> None:
    created = await call(kube, "POST", DEPLOYMENTS, body=deployment())
    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
    ]
    error = await failure(
        kube, "PATCH", f"{DEPLOYMENTS}/p1-mixed", body=stale, content_type=JSON_PATCH
    )
    assert error.status == 422
    current = await call(kube, "GET", f"{DEPLOYMENTS}/p1-mixed")
    assert current["metadata"] == created["metadata"]


async def test_optimistic_concurrency_and_put(kube: KubeClient) -> None:
    created = await call(kube, "POST", DEPLOYMENTS, body=deployment())
    path = f"{DEPLOYMENTS}/p1-mixed"
    stale = {**created, "metadata": {**created["metadata"], "resourceVersion": "1"}}
    assert (await failure(kube, "PUT", path, body=stale)).status == 409
    stale_patch = {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 5}}
    error = await failure(kube, "PATCH", path, body=stale_patch, content_type=MERGE)
    assert error.status == 409

    replaced = await call(
        kube, "PUT", path, body={**created, "spec": {**created["spec"], "replicas": 4}}
    )
    assert replaced["spec"]["replicas"] == 4
    assert int(replaced["metadata"]["resourceVersion"]) > int(
        created["metadata"]["resourceVersion"]
    )
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]


async def test_generate_name(kube: KubeClient) -> None:
    first = await asyncio.to_thread(
        kube.post_event, "default", "p1", "u", reason="A", message="one"
    )
    second = await asyncio.to_thread(
        kube.post_event, "default", "p1", "u", reason="B", message="two"
    )
    names = {first["metadata"]["name"], second["metadata"]["name"]}
    assert len(names) == 2
    assert all(re.fullmatch(r"p1\.[a-z0-9]{5}", name) for name in names)
    body = {"metadata": {"namespace": "default"}}
    assert (
        await failure(kube, "POST", "/api/v1/namespaces/default/events", body=body)
    ).status == 422


async def test_list_has_kind_and_honours_selectors(kube: KubeClient) -> None:
    for name, role in (("a", "interactive"), ("b", "mixed"), ("c", "batch")):
        await call(kube, "POST", PODS, body=pod(name, {"chiron.io/role": role, "app": "x"}))
    listing = await call(kube, "GET", PODS)
    assert (listing["apiVersion"], listing["kind"]) == ("v1", "PodList")
    assert int(listing["metadata"]["resourceVersion"]) >= 3

    async def names(**query: str) -> list[str]:
        found = await call(kube, "GET", PODS, query=query)
        return sorted(item["metadata"]["name"] for item in found["items"])

    assert await names(labelSelector="chiron.io/role=mixed") == ["b"]
    assert await names(labelSelector="chiron.io/role in (mixed,batch)") == ["b", "c"]
    assert await names(labelSelector="chiron.io/role notin (mixed),app") == ["a", "c"]
    assert await names(labelSelector="!app") == []
    assert await names(fieldSelector="metadata.name=c") == ["c"]
    assert await names(fieldSelector="metadata.namespace=default,metadata.name!=c") == ["a", "b"]
    assert (await failure(kube, "GET", PODS, query={"labelSelector": "a in b"})).status == 400


async def test_scale_subresource(kube: KubeClient) -> None:
    await call(kube, "POST", DEPLOYMENTS, body=deployment(replicas=2))
    scale = await call(kube, "GET", f"{DEPLOYMENTS}/p1-mixed/scale")
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 2)
    assert "chiron.io/pool=p1" in scale["status"]["selector"]
    patched = await call(
        kube,
        "PATCH",
        f"{DEPLOYMENTS}/p1-mixed/scale",
        body={"spec": {"replicas": 5}},
        content_type=MERGE,
    )
    assert patched["spec"]["replicas"] == 5
    current = await call(kube, "GET", f"{DEPLOYMENTS}/p1-mixed")
    assert (current["spec"]["replicas"], current["metadata"]["generation"]) == (5, 2)


async def test_finalizers_and_graceful_pod_deletion(kube: KubeClient) -> None:
    await call(kube, "POST", POOLS, body={"metadata": {"name": "p1", "finalizers": ["x/y"]}})
    marked = await call(kube, "DELETE", f"{POOLS}/p1")
    assert marked["metadata"]["deletionTimestamp"]
    assert (await call(kube, "GET", f"{POOLS}/p1"))["metadata"]["deletionTimestamp"]
    await call(
        kube, "PATCH", f"{POOLS}/p1", body={"metadata": {"finalizers": None}}, content_type=MERGE
    )
    assert (await failure(kube, "GET", f"{POOLS}/p1")).status == 404

    # A pod bound to a node only terminates: its kubelet deletes it for good.
    await call(kube, "POST", PODS, body=pod("bound", {}, nodeName="devcluster"))
    terminating = await call(kube, "DELETE", f"{PODS}/bound")
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    await call(kube, "DELETE", f"{PODS}/bound", query={"gracePeriodSeconds": "0"})
    assert (await failure(kube, "GET", f"{PODS}/bound")).status == 404


async def test_garbage_collection_follows_owner_references(kube: KubeClient) -> None:
    pool = await call(kube, "POST", POOLS, body={"metadata": {"name": "p1"}})
    owned = build_deployment(
        "p1",
        "default",
        pool["metadata"]["uid"],
        pool_spec(),
        Role.BATCH,
        replicas=1,
        max_num_seqs=8,
    )
    dep = await call(kube, "POST", DEPLOYMENTS, body=owned)
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "p1-batch",
        "uid": dep["metadata"]["uid"],
    }
    body = pod("p1-batch-x", {})
    body["metadata"]["ownerReferences"] = [owner]
    await call(kube, "POST", PODS, body=body)
    await call(kube, "DELETE", f"{POOLS}/p1")
    assert (await failure(kube, "GET", f"{DEPLOYMENTS}/p1-batch")).status == 404
    assert (await failure(kube, "GET", f"{PODS}/p1-batch-x")).status == 404


async def test_dependents_of_missing_owners_are_collected(kube: KubeClient) -> None:
    orphan = build_deployment(
        "p1", "default", "no-such-uid", pool_spec(), Role.MIXED, replicas=1, max_num_seqs=8
    )
    await call(kube, "POST", DEPLOYMENTS, body=orphan)
    assert (await failure(kube, "GET", f"{DEPLOYMENTS}/p1-mixed")).status == 404


async def test_namespaces_must_exist_and_take_their_objects_along(kube: KubeClient) -> None:
    body = {"metadata": {"name": "p1"}}
    llm = "/apis/chiron.io/v1alpha1/namespaces/llm/llmservingpools"
    assert (await failure(kube, "POST", llm, body=body)).status == 404
    names = [
        n["metadata"]["name"] for n in (await call(kube, "GET", "/api/v1/namespaces"))["items"]
    ]
    assert "default" in names
    namespace = await call(kube, "POST", "/api/v1/namespaces", body={"metadata": {"name": "llm"}})
    assert namespace["status"]["phase"] == "Active"
    await call(kube, "POST", llm, body=body)
    await call(kube, "DELETE", "/api/v1/namespaces/llm")
    assert (await call(kube, "GET", "/apis/chiron.io/v1alpha1/llmservingpools"))["items"] == []


async def test_posted_crds_declare_their_resources(kube: KubeClient) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}
            ],
        },
    }
    created = await call(
        kube, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=crd
    )
    assert {c["type"] for c in created["status"]["conditions"]} == {"Established", "NamesAccepted"}
    widgets = "/apis/example.com/v1/namespaces/default/widgets"
    widget = await call(kube, "POST", widgets, body={"metadata": {"name": "w"}})
    assert widget["kind"] == "Widget"
    discovery = await call(kube, "GET", "/apis/example.com/v1")
    assert [r["name"] for r in discovery["resources"]] in (
        ["widgets", "widgets/status"],
        ["widgets/status", "widgets"],
    )
    # Custom resources take merge patches only, as on a real server.
    error = await failure(
        kube,
        "PATCH",
        f"{widgets}/w",
        body={"spec": {}},
        content_type="application/strategic-merge-patch+json",
    )
    assert error.status == 415


async def test_core_discovery_is_readable(kube: KubeClient) -> None:
    core = await call(kube, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    pods = {r["name"]: r for r in core["resources"] if r["name"].startswith("pods")}
    assert pods["pods"]["shortNames"] == ["po"]
    assert pods["pods/status"]["shortNames"] == []


async def test_the_official_typed_client_reads_what_it_wrote(kubeconfig: Path) -> None:
    def typed() -> tuple[str | None, list[str]]:
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        with api:
            apps = kubernetes.client.AppsV1Api(api)
            apps.create_namespaced_deployment("default", deployment())
            read = apps.read_namespaced_deployment("p1-mixed", "default")
            image = read.spec.template.spec.containers[0].image
            listed = apps.list_namespaced_deployment("default", label_selector="chiron.io/pool=p1")
            return image, [d.metadata.name for d in listed.items]

    image, names = await asyncio.to_thread(typed)
    assert image == "vllm/vllm-openai:v0.11.0"
    assert names == ["p1-mixed"]


async def test_user_reactions_still_take_precedence(
    apiserver: ApiServerHandle, kube: KubeClient
) -> None:
    # kmock's DSL stays usable for fault injection, over the emulated behaviour.
    apiserver.emulator["get /api/v1/namespaces/default/configmaps"] << 503
    assert (await failure(kube, "GET", "/api/v1/namespaces/default/configmaps")).status == 503


async def test_recorded_requests_are_bounded(tmp_path: Path) -> None:
    # The demo runs for hours; kmock would keep every request for assertions.
    url, handle = await start_apiserver(emulator=DevApiServer(request_limit=5))
    try:
        with KubeClient.from_kubeconfig(write_kubeconfig(tmp_path / "kc", url)) as client:
            for _ in range(30):
                await call(client, "GET", PODS)
        assert len(handle.emulator._requests) <= 10
    finally:
        await handle.close()


async def test_extra_namespaces_exist_from_the_start(tmp_path: Path) -> None:
    # `kubectl create namespace` sends protobuf, so a demo asks for its namespaces up front.
    url, handle = await start_apiserver(emulator=DevApiServer(namespaces=("llm",)))
    try:
        with KubeClient.from_kubeconfig(write_kubeconfig(tmp_path / "kc", url)) as client:
            found = await call(client, "GET", "/api/v1/namespaces")
        names = {n["metadata"]["name"] for n in found["items"]}
        assert names == {"default", "kube-system", "kube-public", "kube-node-lease", "llm"}
    finally:
        await handle.close()
