"""Kubernetes objects -> the facts the controllers and the plan read. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import Unschedulable
from chiron_operator.core.state import Bookings
from chiron_operator.kube import applied_max_num_seqs
from chiron_operator.kube.bookings import read_bookings
from chiron_operator.kube.labels import (
    GATEWAY_COMPONENT,
    LABEL_COMPONENT,
    LABEL_ROLE,
)
from chiron_operator.kube.pods import is_serving, pod_max_num_seqs, unschedulable
from chiron_operator.metrics import PodFacts, RoleFacts

Json = Mapping[str, Any]


def role_of(obj: Json) -> Role | None:
    """The role a pool object (Deployment, pod) is labelled with, or None."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    try:
        return Role(labels.get(LABEL_ROLE, ""))
    except ValueError:
        return None


def pod_facts(pods: Iterable[Json]) -> list[PodFacts]:
    """Pods of the pool with their role (from labels), readiness and batch-size cap."""
    facts = []
    for pod in pods:
        role = role_of(pod)
        if role is None:
            continue
        name = str(pod["metadata"]["name"])
        facts.append(PodFacts(name, role, is_serving(pod), pod_max_num_seqs(pod) or 0))
    return facts


def role_facts(deployments: Iterable[Json], pods: Iterable[PodFacts]) -> dict[Role, RoleFacts]:
    """Each existing role Deployment: spec replicas, ready and starting pods, applied batch size.

    Starting capacity is every requested pod not ready yet (created or still to be): all of it
    is on its way, which is what the guard rails must not ask for twice. Readiness is counted
    from the pods themselves, not from the Deployment's status, which lags a watch event.
    """
    pod_list = list(pods)
    facts: dict[Role, RoleFacts] = {}
    for deployment in deployments:
        role = role_of(deployment)
        if role is None:
            continue
        replicas = int((deployment.get("spec") or {}).get("replicas") or 0)
        mine = [p for p in pod_list if p.role is role]
        ready = sum(1 for p in mine if p.ready)
        facts[role] = RoleFacts(
            replicas=replicas,
            ready_replicas=ready,
            starting_replicas=max(0, replicas - ready),
            max_num_seqs=applied_max_num_seqs(deployment) or 0,
        )
    return facts


def is_gateway(obj: Json) -> bool:
    """Whether a pool object (Deployment, pod) is the pool's gateway."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return role_of(obj) is None and labels.get(LABEL_COMPONENT) == GATEWAY_COMPONENT


def gateway_replicas(deployments: Iterable[Json], pods: Iterable[Json]) -> tuple[int, int] | None:
    """(spec replicas, ready pods) of the pool's gateway; None when it has no Deployment."""
    found = [d for d in deployments if is_gateway(d)]
    if not found:
        return None
    replicas = int((found[0].get("spec") or {}).get("replicas") or 0)
    ready = sum(1 for pod in pods if is_gateway(pod) and is_serving(pod))
    return replicas, ready


@dataclass(frozen=True, slots=True)
class UnschedulableFacts:
    """A role's pods no node fits: how many, since when, and the scheduler's word for why."""

    pods: int
    since_s: float
    message: str

    def for_policy(self) -> Unschedulable:
        return Unschedulable(self.pods, self.since_s)


def unschedulable_pods(pods: Iterable[Json], now_s: float) -> dict[Role, UnschedulableFacts]:
    """The roles with pods the scheduler could not place (PodScheduled False, Unschedulable)."""
    found: dict[Role, list[tuple[float, str]]] = {}
    for pod in pods:
        role = role_of(pod)
        stuck = unschedulable(pod, now_s) if role is not None else None
        if role is not None and stuck is not None:
            found.setdefault(role, []).append(stuck)
    return {
        role: UnschedulableFacts(len(stuck), min(t for t, _ in stuck), min(stuck)[1])
        for role, stuck in found.items()
    }


def role_bookings(deployments: Iterable[Json]) -> dict[Role, Bookings]:
    """The restart and resize stamps each role Deployment carries (`kube.bookings`)."""
    return {
        role: read_bookings(deployment)
        for deployment in deployments
        if (role := role_of(deployment)) is not None
    }
