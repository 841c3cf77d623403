"""The Deployment and ReplicaSet controllers' arithmetic, as pure functions.

`plan` decides which pods to create and delete for a Deployment, given its pods' state:
scaling, and rolling a new pod template out within maxSurge/maxUnavailable (or Recreate).
Scale-down picks victims the way the ReplicaSet controller ranks pods: not ready first, then
the lowest `controller.kubernetes.io/pod-deletion-cost`, then the newest. There are no
ReplicaSet objects: pods are owned by their Deployment directly and carry the template's
`pod-template-hash` label, which is what tells old pods from new ones.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from chiron_operator.devcluster.cluster.objects import NAME_ALPHABET

HASH_LABEL: Final = "pod-template-hash"


@dataclass(frozen=True, slots=True)
class PodState:
    """What the controllers need to know of one (non-terminating) pod."""

    name: str
    template_hash: str
    ready: bool
    deletion_cost: int
    created: int  # creation order; larger is newer


@dataclass(frozen=True, slots=True)
class Plan:
    """How many new-template pods to create and which pods to delete."""

    create: int
    delete: tuple[str, ...]


def template_hash(template: Mapping[str, Any]) -> str:
    """A stable 10-character hash of a pod template, in Kubernetes' name alphabet."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(10):
        number, index = divmod(number, len(NAME_ALPHABET))
        chars.append(NAME_ALPHABET[index])
    return "".join(chars)


def rolling_limits(strategy: Mapping[str, Any], desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts; percentages round as Kubernetes rounds them."""
    rolling = strategy.get("rollingUpdate") or {}
    surge = _count(rolling.get("maxSurge", "25%"), desired, up=True)
    unavailable = _count(rolling.get("maxUnavailable", "25%"), desired, up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the API rejects both zero; the controller would never progress
    return surge, unavailable


def _count(value: object, desired: int, *, up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = desired * float(value[:-1]) / 100
        return math.ceil(exact) if up else math.floor(exact)
    return int(str(value))


def scale_down_order(pods: Sequence[PodState]) -> list[PodState]:
    """Pods in the order the ReplicaSet controller deletes them."""
    return sorted(pods, key=lambda p: (p.ready, p.deletion_cost, -p.created, p.name))


def plan(
    desired: int, current_hash: str, pods: Sequence[PodState], strategy: Mapping[str, Any]
) -> Plan:
    """The next step towards `desired` ready pods of the current template."""
    new = [p for p in pods if p.template_hash == current_hash]
    old = [p for p in pods if p.template_hash != current_hash]
    if not old or len(new) > desired:
        return _scale(desired, new, old)
    if strategy.get("type") == "Recreate":
        return Plan(0, tuple(p.name for p in old))
    return _roll(desired, new, old, *rolling_limits(strategy, desired))


def _scale(desired: int, new: list[PodState], old: list[PodState]) -> Plan:
    if len(new) >= desired:
        excess = scale_down_order(new)[: len(new) - desired]
        return Plan(0, tuple(p.name for p in [*old, *excess]))
    return Plan(desired - len(new), ())


def _roll(
    desired: int, new: list[PodState], old: list[PodState], surge: int, unavailable: int
) -> Plan:
    total = len(new) + len(old)
    create = max(0, min(desired - len(new), desired + surge - total))
    # As the Deployment controller: old pods go only while enough pods stay ready, counting
    # the new pods that are not ready yet as unavailable.
    min_available = desired - unavailable
    new_unready = sum(not p.ready for p in new)
    budget = total - min_available - new_unready
    ranked = scale_down_order(old)
    unready_old = [p for p in ranked if not p.ready][: max(0, budget)]
    budget -= len(unready_old)
    ready = sum(p.ready for p in [*new, *old])
    ready_budget = max(0, min(budget, ready - min_available))
    ready_old = [p for p in ranked if p.ready][:ready_budget]
    return Plan(create, tuple(p.name for p in [*unready_old, *ready_old]))


def deployment_status(
    deployment: Mapping[str, Any],
    pods: Sequence[PodState],
    current_hash: str,
    *,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """The Deployment's status for these (non-terminating) pods; `now` stamps transitions."""
    spec = deployment.get("spec") or {}
    desired = int(spec.get("replicas", 1))
    ready = sum(p.ready for p in pods)
    updated = sum(p.template_hash == current_hash for p in pods)
    _, max_unavailable = rolling_limits(spec.get("strategy") or {}, desired)
    complete = updated == desired == len(pods) and ready >= desired
    conditions = [
        ("Available", ready >= desired - max_unavailable, "MinimumReplicasAvailable"),
        ("Progressing", True, "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated"),
    ]
    return {
        "observedGeneration": (deployment.get("metadata") or {}).get("generation", 1),
        "replicas": len(pods),
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(0, max(desired, len(pods)) - ready),
        "conditions": [
            _condition(kind, ok, reason, previous, now) for kind, ok, reason in conditions
        ],
    }


def _condition(
    kind: str, ok: bool, reason: str, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = next(
        (c for c in (previous or {}).get("conditions") or [] if c.get("type") == kind), None
    )
    unchanged = before is not None and before.get("status") == status
    since = before.get("lastTransitionTime") if unchanged and before else now
    return {"type": kind, "status": status, "reason": reason, "lastTransitionTime": since}
