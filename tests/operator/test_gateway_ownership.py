"""The operator writes and deletes only the gateway objects its pool owns (the dev cluster's API
server): a ServiceAccount or RoleBinding named `<pool>-gateway` that someone else made, or that
an earlier pool of the same name left behind, is never patched, re-created or deleted."""

from __future__ import annotations

import asyncio
from typing import Any

from chiron_operator.api import parse_spec
from chiron_operator.kube import KubeClient
from chiron_operator.kube.client import ROLE_BINDINGS, SERVICE_ACCOUNTS
from chiron_operator.kube.gateway import build_gateway_service_account
from chiron_operator.operator.context import GatewaySettings, PoolRef
from chiron_operator.operator.gateway_objects import owned_by_pool
from chiron_operator.operator.objects import ensure_objects
from tests.devcluster.conftest import apiserver, kube, kubeconfig
from tests.kube.support import SPEC

__all__ = ["apiserver", "kube", "kubeconfig"]

NS, POOL, NAME = "llm", "p", "p-gateway"
SETTINGS = GatewaySettings(image="registry.example/chiron:1", cluster_role="chiron-gateway")
RBAC = "rbac.authorization.k8s.io"


async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def create_pool(kube: KubeClient) -> PoolRef:
    await run(kube.request, "POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
    pools = f"/apis/chiron.io/v1alpha1/namespaces/{NS}/llmservingpools"
    pool = await run(kube.request, "POST", pools, body={"metadata": {"name": POOL}})
    return PoolRef(NS, POOL, str(pool["metadata"]["uid"]))


async def reconcile(kube: KubeClient, ref: PoolRef, *, enabled: bool) -> list[str]:
    spec = parse_spec({**SPEC, "gateway": {"enabled": enabled}})
    existing = await run(kube.list_deployments, ref.namespace, ref.name)
    touched: list[str] = await run(
        ensure_objects, kube, ref, spec, spec.to_tuning(), existing, gateway=SETTINGS
    )
    return touched


def foreign_account() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": NAME, "namespace": NS, "labels": {"team": "search"}},
    }


def foreign_binding() -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": NAME, "namespace": NS},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "search-bot", "namespace": NS}],
    }


async def test_a_same_named_account_and_binding_of_someone_else_are_never_touched(
    kube: KubeClient,
) -> None:
    ref = await create_pool(kube)
    account = await run(kube.create_in, SERVICE_ACCOUNTS, foreign_account())
    binding = await run(kube.create_in, ROLE_BINDINGS, foreign_binding())

    touched = await reconcile(kube, ref, enabled=True)
    assert NAME in touched  # the gateway's Deployment, not the two taken names
    assert touched.count(NAME) == 1
    for collection, before in ((SERVICE_ACCOUNTS, account), (ROLE_BINDINGS, binding)):
        now = await run(kube.get_named, collection, NS, NAME)
        assert now["metadata"]["uid"] == before["metadata"]["uid"]
        assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert "ownerReferences" not in now["metadata"]
    # A roleRef to another role used to mean "re-create it": not someone else's binding.
    assert (await run(kube.get_named, ROLE_BINDINGS, NS, NAME))["roleRef"]["name"] == "view"

    assert await reconcile(kube, ref, enabled=False) == [NAME, POOL]  # Deployment, Service
    assert await run(kube.get_named, SERVICE_ACCOUNTS, NS, NAME) is not None
    assert await run(kube.get_named, ROLE_BINDINGS, NS, NAME) is not None


async def test_the_pools_own_account_and_binding_are_made_and_deleted(kube: KubeClient) -> None:
    ref = await create_pool(kube)
    await reconcile(kube, ref, enabled=True)
    for collection in (SERVICE_ACCOUNTS, ROLE_BINDINGS):
        made = await run(kube.get_named, collection, NS, NAME)
        (owner,) = made["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("LLMServingPool", POOL, ref.uid)

    deleted = await reconcile(kube, ref, enabled=False)
    assert sorted(deleted) == sorted([NAME, POOL, NAME, NAME])
    for collection in (SERVICE_ACCOUNTS, ROLE_BINDINGS):
        assert await run(kube.get_named, collection, NS, NAME) is None
    # Gone: a second pass reads them by name and deletes nothing.
    assert await reconcile(kube, ref, enabled=False) == []


def test_ownership_is_an_owner_reference_to_this_pool() -> None:
    """Same pool name, another uid: an earlier pool's leftover, the garbage collector's to
    delete (the dev cluster's API server does so at once, hence no live test of it)."""
    ref = PoolRef(NS, POOL, "uid-1")
    assert owned_by_pool(build_gateway_service_account(POOL, NS, "uid-1"), ref)
    assert not owned_by_pool(build_gateway_service_account(POOL, NS, "uid-0"), ref)
    assert not owned_by_pool(build_gateway_service_account("other", NS, "uid-1"), ref)
    assert not owned_by_pool(foreign_account(), ref)
    assert not owned_by_pool(None, ref)
    deployment = build_gateway_service_account(POOL, NS, "uid-1")
    deployment["metadata"]["ownerReferences"][0]["kind"] = "Deployment"
    assert not owned_by_pool(deployment, ref)
    # A pool known by name only (no uid yet) owns what names it.
    assert owned_by_pool(build_gateway_service_account(POOL, NS, "uid-0"), PoolRef(NS, POOL, ""))
