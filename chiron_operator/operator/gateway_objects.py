"""The operator's reads and writes of a pool's gateway objects (blocking; called via to_thread).

With spec.gateway.enabled: the ServiceAccount and its RoleBinding first (a pod naming a missing
ServiceAccount is refused), the SQLite store's claim (a pod naming a missing claim stays
Pending), then the Deployment and the `<pool>` Service, each created when missing and patched
when the live object lacks what the spec asks. Disabled: all four deleted, but not the claim.
Only objects the pool owns (an owner reference to it) are patched, re-created or deleted: a
ServiceAccount or RoleBinding of the same name that someone else made is left alone, with a
warning, since the pool's name is the tenant's choice and may collide with theirs.
The gateway's replicas are the spec's (no controller scales it), so its Deployment is patched
whole, with directives deleting what the other store kind put there (`deployment_patch`).

The claim is created when missing and never patched or deleted by the operator: it holds the
accepted batches, which must outlive a disabled gateway or a switch to PostgreSQL (the user
deletes it then), and its owner reference has it go with the pool. A size or class changed
later is not applied: a claim cannot shrink and its class is immutable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from chiron_operator.api import LLMServingPoolSpec
from chiron_operator.api.base import API_VERSION, KIND
from chiron_operator.kube import KubeApiError, KubeClient
from chiron_operator.kube import labels as lb
from chiron_operator.kube.client import (
    DEPLOYMENTS,
    PERSISTENT_VOLUME_CLAIMS,
    ROLE_BINDINGS,
    SERVICE_ACCOUNTS,
    SERVICES,
)
from chiron_operator.kube.gateway import (
    build_gateway_deployment,
    build_gateway_role_binding,
    build_gateway_service,
    build_gateway_service_account,
)
from chiron_operator.kube.gateway_store import build_store_claim, deployment_patch
from chiron_operator.operator.context import GatewaySettings, PoolRef
from chiron_operator.operator.drift import contains, labels_differ, service_differs

log = logging.getLogger(__name__)
Json = dict[str, Any]


def ensure_gateway(
    kube: KubeClient,
    ref: PoolRef,
    spec: LLMServingPoolSpec,
    settings: GatewaySettings,
    *,
    deployments: Mapping[str, Json],
    services: Mapping[str, Json],
) -> list[str]:
    """Bring the gateway's objects to what spec.gateway says; the names written.

    `deployments` and `services` are the pool's, by name, as just read (no second read).
    """
    if not spec.gateway.enabled:
        return remove_gateway(kube, ref, deployments, services)
    touched = _ensure_account(kube, ref)
    touched += _ensure_binding(kube, ref, settings.cluster_role)
    touched += _ensure_store_claim(kube, ref, spec)
    deployment = build_gateway_deployment(
        ref.name, ref.namespace, ref.uid, spec, image=settings.image
    )
    name = lb.gateway_name(ref.name)
    current = deployments.get(name)
    if current is None:
        kube.apply_deployment(deployment)
        touched.append(name)
    elif not contains(current.get("spec"), deployment["spec"]) or labels_differ(
        current, deployment
    ):
        kube.patch_deployment(ref.namespace, name, deployment_patch(deployment, spec.gateway.store))
        touched.append(name)
    return touched + _ensure_entrypoint(kube, ref, services)


def _ensure_entrypoint(kube: KubeClient, ref: PoolRef, services: Mapping[str, Json]) -> list[str]:
    """The `<pool>` Service. One of that name the listing (by the pool's labels) did not show
    is someone else's: it is left alone, never patched into the pool's (its owner reference
    would have the pool's deletion take it along)."""
    wanted = build_gateway_service(ref.name, ref.namespace, ref.uid)
    name = lb.entrypoint_name(ref.name)
    current = services.get(name)
    if current is not None:
        if not service_differs(current, wanted):
            return []
        kube.patch_named(SERVICES, ref.namespace, name, wanted)
        return [name]
    try:
        kube.create_in(SERVICES, wanted)
    except KubeApiError as exc:
        if not exc.conflict:
            raise
        log.warning(
            "pool %s/%s: a Service named %s exists and is not the pool's; the gateway has no "
            "entrypoint until it is renamed or deleted",
            ref.namespace,
            ref.name,
            name,
        )
        return []
    return [name]


def _ensure_store_claim(kube: KubeClient, ref: PoolRef, spec: LLMServingPoolSpec) -> list[str]:
    """The SQLite store's claim, created when missing (see the module's description)."""
    wanted = build_store_claim(ref.name, ref.namespace, ref.uid, spec.gateway.store)
    if wanted is None:
        return []
    name = str(wanted["metadata"]["name"])
    if kube.get_named(PERSISTENT_VOLUME_CLAIMS, ref.namespace, name) is not None:
        return []
    try:
        kube.create_in(PERSISTENT_VOLUME_CLAIMS, wanted)
    except KubeApiError as exc:
        # Created between the read and the write (another reconcile of the same pool).
        if not exc.conflict:
            raise
        return []
    return [name]


def _ensure_account(kube: KubeClient, ref: PoolRef) -> list[str]:
    wanted = build_gateway_service_account(ref.name, ref.namespace, ref.uid)
    name = lb.gateway_name(ref.name)
    current = kube.get_named(SERVICE_ACCOUNTS, ref.namespace, name)
    if current is not None and not owned_by_pool(current, ref):
        _not_ours(ref, "ServiceAccount", name)
        return []
    if current is None:
        kube.create_in(SERVICE_ACCOUNTS, wanted)
    elif labels_differ(current, wanted):
        kube.patch_named(SERVICE_ACCOUNTS, ref.namespace, name, wanted)
    else:
        return []
    return [name]


def _ensure_binding(kube: KubeClient, ref: PoolRef, cluster_role: str) -> list[str]:
    """The RoleBinding; re-created when it binds another role (a roleRef is immutable)."""
    wanted = build_gateway_role_binding(ref.name, ref.namespace, ref.uid, cluster_role=cluster_role)
    name = lb.gateway_name(ref.name)
    current = kube.get_named(ROLE_BINDINGS, ref.namespace, name)
    if current is not None and not owned_by_pool(current, ref):
        _not_ours(ref, "RoleBinding", name)
        return []
    if current is not None and current.get("roleRef") != wanted["roleRef"]:
        kube.delete_named(ROLE_BINDINGS, ref.namespace, name)
        current = None
    if current is None:
        kube.create_in(ROLE_BINDINGS, wanted)
    elif current.get("subjects") != wanted["subjects"] or labels_differ(current, wanted):
        kube.patch_named(ROLE_BINDINGS, ref.namespace, name, wanted)
    else:
        return []
    return [name]


def remove_gateway(
    kube: KubeClient,
    ref: PoolRef,
    deployments: Mapping[str, Json],
    services: Mapping[str, Json],
) -> list[str]:
    """Delete the gateway's objects the pool owns; the names deleted.

    The Deployment and the Service are deleted when the pool's listings show them. The
    ServiceAccount and the RoleBinding are not listed (the operator only gets them by name):
    each is read, and deleted only when its owner reference names the pool.
    """
    name = lb.gateway_name(ref.name)
    entrypoint = lb.entrypoint_name(ref.name)
    deleted = []
    deployment = deployments.get(name)
    if owned_by_pool(deployment, ref) and kube.delete_named(DEPLOYMENTS, ref.namespace, name):
        deleted.append(name)
    ours = _is_gateway_service(services.get(entrypoint))
    if ours and kube.delete_named(SERVICES, ref.namespace, entrypoint):
        deleted.append(entrypoint)
    for collection in (ROLE_BINDINGS, SERVICE_ACCOUNTS):
        current = kube.get_named(collection, ref.namespace, name)
        if current is None:
            continue
        if not owned_by_pool(current, ref):
            _not_ours(ref, collection.rsplit("/", 1)[-1], name)
        elif kube.delete_named(collection, ref.namespace, name):
            deleted.append(name)
    return deleted


def owned_by_pool(obj: Json | None, ref: PoolRef) -> bool:
    """Whether `obj` has an owner reference to the pool (its uid too, when known).

    The uid tells a pool from an earlier one of the same name, whose objects the garbage
    collector is about to delete.
    """
    meta = (obj or {}).get("metadata") or {}
    for owner in meta.get("ownerReferences") or []:
        same = (owner.get("apiVersion"), owner.get("kind"), owner.get("name"))
        if same == (API_VERSION, KIND, ref.name) and (not ref.uid or owner.get("uid") == ref.uid):
            return True
    return False


def _not_ours(ref: PoolRef, kind: str, name: str) -> None:
    log.warning(
        "pool %s/%s: a %s named %s exists and is not the pool's; it is left alone (rename the "
        "pool or remove it for the pool's gateway to get its own)",
        ref.namespace,
        ref.name,
        kind,
        name,
    )


def _is_gateway_service(service: Json | None) -> bool:
    # `<pool>` is the pool's own name: a Service of that name the operator did not make (a
    # user's, from before the gateway existed) is not the operator's to delete.
    labels = ((service or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(lb.LABEL_COMPONENT) == lb.GATEWAY_COMPONENT


def missing_gateway(ref: PoolRef, spec: LLMServingPoolSpec, deployments: Sequence[Json]) -> bool:
    """Whether spec.gateway asks for a gateway whose Deployment does not exist."""
    names = {str(d["metadata"]["name"]) for d in deployments}
    return spec.gateway.enabled and lb.gateway_name(ref.name) not in names
