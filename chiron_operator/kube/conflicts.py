"""Detecting another actor on a pool's Deployments. Pure: no I/O.

A pool never fights another autoscaler: two controllers writing one replica count make it
oscillate, and each one's view of the other's changes is noise. So before acting the operator
asks whether anyone else scales its Deployments, and reports a Conflict instead of acting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chiron_operator.kube.deployments import applied_replicas


class ConflictReason(StrEnum):
    """Why a Deployment is considered contested. CamelCase like Kubernetes reasons."""

    HPA_TARGETS_DEPLOYMENT = "HorizontalPodAutoscalerTargetsDeployment"
    SCALED_OBJECT_TARGETS_DEPLOYMENT = "ScaledObjectTargetsDeployment"
    REPLICAS_CHANGED_EXTERNALLY = "ReplicasChangedExternally"


@dataclass(frozen=True, slots=True)
class Conflict:
    """One object contesting one of the pool's Deployments."""

    kind: str
    namespace: str
    name: str
    deployment: str
    reason: ConflictReason
    message: str


def find_conflicts(
    deployments: Iterable[Mapping[str, Any]],
    hpas: Iterable[Mapping[str, Any]],
    scaled_objects: Iterable[Mapping[str, Any]],
    last_applied: Mapping[str, int] | None = None,
) -> list[Conflict]:
    """Every HPA, ScaledObject and external replica change contesting `deployments`.

    `last_applied` maps Deployment names to the replicas the operator remembers writing; it is
    only the fallback for a Deployment without the `chiron.io/applied-replicas` annotation,
    because the annotation is written in the same patch as the replicas and so is never stale
    (the operator's own memory can be, if it stopped between patching and recording).
    """
    by_key = {_key(d): d for d in deployments}
    conflicts = [
        *_scalers(hpas, by_key, "HorizontalPodAutoscaler", ConflictReason.HPA_TARGETS_DEPLOYMENT),
        *_scalers(
            scaled_objects, by_key, "ScaledObject", ConflictReason.SCALED_OBJECT_TARGETS_DEPLOYMENT
        ),
    ]
    for deployment in by_key.values():
        found = _replicas_changed(deployment, last_applied or {})
        if found is not None:
            conflicts.append(found)
    return conflicts


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _scalers(
    scalers: Iterable[Mapping[str, Any]],
    deployments: Mapping[tuple[str, str], Mapping[str, Any]],
    kind: str,
    reason: ConflictReason,
) -> list[Conflict]:
    found = []
    for scaler in scalers:
        namespace, name = _key(scaler)
        target = (scaler.get("spec") or {}).get("scaleTargetRef") or {}
        target_name = str(target.get("name") or "")
        # KEDA defaults an unset kind to Deployment (apps/v1); an HPA always sets it.
        if target.get("kind", "Deployment") != "Deployment" or not _is_apps(target):
            continue
        if (namespace, target_name) in deployments:
            message = f"{kind} {namespace}/{name} scales Deployment {target_name}"
            found.append(Conflict(kind, namespace, name, target_name, reason, message))
    return found


def _is_apps(target: Mapping[str, Any]) -> bool:
    api_version = str(target.get("apiVersion") or "apps/v1")
    return api_version.split("/", maxsplit=1)[0] in ("apps", "extensions")


def _replicas_changed(
    deployment: Mapping[str, Any], last_applied: Mapping[str, int]
) -> Conflict | None:
    namespace, name = _key(deployment)
    expected = applied_replicas(deployment)
    if expected is None:
        expected = last_applied.get(name)
    actual = (deployment.get("spec") or {}).get("replicas", 1)
    if expected is None or actual == expected:
        return None
    message = (
        f"Deployment {namespace}/{name} has {actual} replicas but the operator last applied "
        f"{expected}: someone else scaled it"
    )
    return Conflict(
        "Deployment", namespace, name, name, ConflictReason.REPLICAS_CHANGED_EXTERNALLY, message
    )
