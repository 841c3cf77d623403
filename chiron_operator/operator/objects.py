"""The operator's reads and writes of a pool's objects (blocking; called via to_thread)."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chiron_operator.api import GROUP, PLURAL, VERSION, LLMServingPoolSpec
from chiron_operator.api.status import DecisionField
from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import PoolSnapshot
from chiron_operator.core.state import Bookings
from chiron_operator.core.tuning import PoolTuning
from chiron_operator.kube import (
    KubeApiError,
    KubeClient,
    applied_max_num_seqs,
    applied_replicas,
    build_deployment,
    build_services,
    deletion_costs,
    deployment_name,
    max_num_seqs_patch,
    replicas_patch,
    vllm_args,
)
from chiron_operator.kube.bookings import booking_annotations
from chiron_operator.kube.labels import ANNOTATION_APPLIED_REPLICAS
from chiron_operator.kube.pod_security import DEFAULT_VLLM_SECURITY, VllmSecurity
from chiron_operator.operator.context import DEFAULT_GATEWAY, GatewaySettings, PoolRef
from chiron_operator.operator.drift import contains, service_differs
from chiron_operator.operator.gateway_objects import ensure_gateway
from chiron_operator.operator.plan import Change, Plan

Json = dict[str, Any]
POOLS = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{PLURAL}/{{name}}"


@dataclass(frozen=True, slots=True)
class ClusterState:
    """What one tick reads from the API server about a pool."""

    deployments: list[Json]
    pods: list[Json]
    hpas: list[Json]
    scaled_objects: list[Json]


def read_cluster(kube: KubeClient, ref: PoolRef) -> ClusterState:
    """The pool's Deployments and pods, and the namespace's other autoscalers."""
    return ClusterState(
        deployments=kube.list_deployments(ref.namespace, ref.name),
        pods=kube.list_pods(ref.namespace, ref.name),
        hpas=kube.list_hpas(ref.namespace),
        scaled_objects=kube.list_scaled_objects(ref.namespace),
    )


def ensure_objects(
    kube: KubeClient,
    ref: PoolRef,
    spec: LLMServingPoolSpec,
    tuning: PoolTuning,
    existing: Sequence[Json],
    *,
    gateway: GatewaySettings = DEFAULT_GATEWAY,
    security: VllmSecurity = DEFAULT_VLLM_SECURITY,
) -> list[str]:
    """Create missing role Deployments and the Services; roll template changes into existing
    ones; create, update or remove the gateway's objects as spec.gateway says. The names written.
    `security` is the vLLM pods' security context the operator requires.

    An existing role Deployment keeps its replicas and its applied --max-num-seqs (they are the
    controllers' to change), so a spec edit never resets a running pool.
    """
    by_name = {str(d["metadata"]["name"]): d for d in existing}
    touched = []
    for role in Role:
        role_bounds = tuning.role_bounds(role)
        name = deployment_name(ref.name, role)
        current = by_name.get(name)
        if current is None and role_bounds.max_replicas == 0:
            continue
        if current is None:
            new = build_deployment(
                ref.name,
                ref.namespace,
                ref.uid,
                spec,
                role,
                replicas=role_bounds.min_replicas,
                max_num_seqs=role_bounds.deployment_seqs(tuning.fast_path),
                security=security,
            )
            current = _create_deployment(kube, new)
            if current is None:
                touched.append(name)
                continue
        seqs = role_bounds.deployment_seqs(tuning.fast_path)
        body = _template_body(ref, spec, role, current, seqs, security=security)
        if _template_differs(current, body):
            kube.patch_deployment(ref.namespace, name, body)
            touched.append(name)
    services = {str(s["metadata"]["name"]): s for s in kube.list_services(ref.namespace, ref.name)}
    touched += _ensure_services(kube, spec, ref, services)
    # Last: the vLLM pods and their Services must not wait for (or fail with) the gateway.
    touched += ensure_gateway(kube, ref, spec, gateway, deployments=by_name, services=services)
    return touched


def _create_deployment(kube: KubeClient, body: Json) -> Json | None:
    """Create a Deployment; None when created, the live object when someone else was first.

    Whoever created it first may have scaled it since: the caller must then treat it as an
    existing Deployment (template only), never write the new object's replicas over it.
    """
    meta = body["metadata"]
    try:
        kube.create_deployment(body)
    except KubeApiError as exc:
        if not exc.conflict:
            raise
        found = kube.get_deployment(str(meta["namespace"]), str(meta["name"]))
        if found is None:
            raise
        return found
    return None


def _ensure_services(
    kube: KubeClient, spec: LLMServingPoolSpec, ref: PoolRef, existing: Mapping[str, Json]
) -> list[str]:
    """Create the traffic classes' missing Services and patch those that differ; the names
    written (`existing`: the pool's Services by name)."""
    touched = []
    for service in build_services(ref.name, ref.namespace, ref.uid, spec):
        name = str(service["metadata"]["name"])
        current = existing.get(name)
        if current is None or service_differs(current, service):
            kube.apply_service(service)
            touched.append(name)
    return touched


def missing_roles(ref: PoolRef, tuning: PoolTuning, existing: Sequence[Json]) -> list[Role]:
    """Roles the spec allows (maxReplicas > 0) whose Deployment does not exist."""
    names = {str(d["metadata"]["name"]) for d in existing}
    return [
        role
        for role in Role
        if tuning.role_bounds(role).max_replicas > 0
        and deployment_name(ref.name, role) not in names
    ]


def _template_body(
    ref: PoolRef,
    spec: LLMServingPoolSpec,
    role: Role,
    current: Json,
    initial_seqs: int,
    *,
    security: VllmSecurity,
) -> Json:
    """The Deployment as the spec wants it, for an existing one: its template, not its size."""
    seqs = applied_max_num_seqs(current) or initial_seqs
    replicas = int((current.get("spec") or {}).get("replicas") or 0)
    body = build_deployment(
        ref.name,
        ref.namespace,
        ref.uid,
        spec,
        role,
        replicas=replicas,
        max_num_seqs=seqs,
        security=security,
    )
    # Replicas belong to the controllers and to conflict detection: a template edit must not
    # overwrite them, nor the record of what the operator last applied.
    body["spec"].pop("replicas", None)
    body["metadata"].get("annotations", {}).pop(ANNOTATION_APPLIED_REPLICAS, None)
    return body


def _template_differs(current: Json, body: Json) -> bool:
    """Whether the live pod template lacks anything the spec's template sets.

    Every field counts (labels, annotations, tolerations, probes, the service account...), not
    a chosen few, or a spec edit of the others would never reach the pods.
    """
    have = (current.get("spec") or {}).get("template") or {}
    return not contains(have, body["spec"]["template"])


@dataclass
class Applying:
    """What applying a plan did: the changes written, and the writes the API server refused.

    `errors` holds every failed write, also one whose change was found on the Deployment all
    the same (a 409 or a 5xx after the commit): it happened, and the error is still news.
    `booked` are each role's restart and resize stamps, written with its changes.
    """

    booked: Mapping[Role, Bookings] = field(default_factory=dict)
    applied: list[Change] = field(default_factory=list)
    errors: dict[Change, KubeApiError] = field(default_factory=dict)


def apply_plan(
    kube: KubeClient,
    ref: PoolRef,
    spec: LLMServingPoolSpec,
    the_plan: Plan,
    *,
    snapshot: PoolSnapshot,
    pods: Sequence[Json],
    applying: Applying | None = None,
) -> list[Change]:
    """Apply every change of an enforcing plan; the changes applied, in order.

    Each change is appended to `applying.applied` as soon as it is written, so a caller whose
    write failed halfway knows which changes did happen. A write whose outcome the answer does
    not tell (`KubeApiError.outcome_unknown`) is read back: found, it counts as applied.
    """
    applying = Applying() if applying is None else applying
    for change in the_plan.changes:
        name = deployment_name(ref.name, change.role)
        booked = booking_annotations(applying.booked.get(change.role, Bookings()))
        try:
            _write_change(kube, ref, spec, change, booked, snapshot=snapshot, pods=pods)
        except KubeApiError as exc:
            applying.errors[change] = exc
            if not (exc.outcome_unknown and _landed(kube, ref.namespace, name, change)):
                raise
        applying.applied.append(change)
    return applying.applied


def _write_change(
    kube: KubeClient,
    ref: PoolRef,
    spec: LLMServingPoolSpec,
    change: Change,
    booked: Mapping[str, str],
    *,
    snapshot: PoolSnapshot,
    pods: Sequence[Json],
) -> None:
    name = deployment_name(ref.name, change.role)
    if change.field is DecisionField.REPLICAS:
        if change.to_value < change.from_value:
            _mark_victims(kube, ref, change, snapshot, pods)
        kube.patch_deployment(ref.namespace, name, replicas_patch(change.to_value, booked))
    else:
        args = vllm_args(spec, change.role, change.to_value)
        patch = max_num_seqs_patch(args, change.to_value, booked)
        kube.patch_deployment(ref.namespace, name, patch)


def _landed(kube: KubeClient, namespace: str, name: str, change: Change) -> bool:
    """Whether the Deployment shows `change` as the operator writes it (value and record)."""
    try:
        found = kube.get_deployment(namespace, name)
    except KubeApiError:
        return False
    if found is None:
        return False
    if change.field is DecisionField.REPLICAS:
        replicas = (found.get("spec") or {}).get("replicas")
        return replicas == change.to_value and applied_replicas(found) == change.to_value
    return applied_max_num_seqs(found) == change.to_value


def adopt_scale_downs(kube: KubeClient, ref: PoolRef, names: Sequence[str]) -> None:
    """Record 0 as applied on Deployments a user already scaled to 0 (disabled roles).

    The scale patch writes the replicas and the operator's record of them together; the
    replicas are 0 already, so only the record changes.
    """
    for name in names:
        kube.scale_deployment(ref.namespace, name, 0)


def _mark_victims(
    kube: KubeClient, ref: PoolRef, change: Change, snapshot: PoolSnapshot, pods: Sequence[Json]
) -> None:
    """Mark the least-loaded pods of the role to go first (pod-deletion-cost)."""
    loads: dict[str, float] = {}
    for pod in snapshot.role(change.role).pods:
        load = pod.running_requests + (
            pod.waiting_requests if math.isfinite(pod.waiting_requests) else 0.0
        )
        # A pod whose load is unknown may be busy: never choose it over one known to be idle.
        loads[pod.name] = load if math.isfinite(load) else math.inf
    role_pods = [p for p in pods if p["metadata"]["name"] in loads]
    costs = deletion_costs(loads, change.from_value - change.to_value)
    kube.apply_deletion_costs(ref.namespace, role_pods, costs)


def patch_status(kube: KubeClient, ref: PoolRef, status: Mapping[str, Any]) -> None:
    """Merge-patch the pool's status subresource."""
    kube.request(
        "PATCH",
        POOLS + "/status",
        params={"namespace": ref.namespace, "name": ref.name},
        body={"status": dict(status)},
        content_type="application/merge-patch+json",
    )


def read_secret_key(kube: KubeClient, namespace: str, name: str, key: str) -> str | None:
    """One key of a Secret, decoded; None when the key is absent.

    Raises KubeApiError when the Secret cannot be read (absent, or not granted: the chart
    grants `get` only on the names listed in `prometheus.poolAuthSecretNames`).
    """
    secret = kube.request(
        "GET",
        "/api/v1/namespaces/{namespace}/secrets/{name}",
        params={"namespace": namespace, "name": name},
    )
    encoded = (secret.get("data") or {}).get(key)
    return base64.b64decode(encoded).decode().strip() if encoded else None
