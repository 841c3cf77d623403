"""What the operator, the gateway and the dev cluster's clients read of a Pod. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from chiron_operator.kube.deployments import max_num_seqs_of
from chiron_operator.kube.labels import ANNOTATION_MAX_NUM_SEQS, CONTAINER_NAME


def is_serving(pod: Mapping[str, Any]) -> bool:
    """Ready and not terminating: a pod that may take new requests.

    A pod being deleted can still report Ready while it drains (its preStop hook runs first),
    so the deletion timestamp is what tells it apart.
    """
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_max_num_seqs(pod: Mapping[str, Any]) -> int | None:
    """The --max-num-seqs a pod runs: its annotation (the operator's), else its vLLM
    container's args; None when neither says."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    raw = str(annotations.get(ANNOTATION_MAX_NUM_SEQS, ""))
    if raw.isdigit():
        return int(raw)
    containers = (pod.get("spec") or {}).get("containers") or []
    named = [c for c in containers if c.get("name") == CONTAINER_NAME] or containers
    for container in named:
        found = max_num_seqs_of([str(a) for a in container.get("args") or []])
        if found is not None:
            return found
    return None


def _unix_s(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def unschedulable(pod: Mapping[str, Any], now_s: float) -> tuple[float, str] | None:
    """(since when, the scheduler's message) for a pod no node fits; None for any other pod.

    The scheduler says so with PodScheduled False, reason Unschedulable ("0/4 nodes are
    available: 4 Insufficient nvidia.com/gpu"). The time is that condition's transition, else
    the pod's creation, else `now_s`: never a time that would make it look older than it is.
    """
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    for found in (pod.get("status") or {}).get("conditions") or []:
        if found.get("type") != "PodScheduled" or found.get("status") != "False":
            continue
        if found.get("reason") != "Unschedulable":
            return None
        since_s = _unix_s(found.get("lastTransitionTime"))
        if since_s is None:
            since_s = _unix_s((pod.get("metadata") or {}).get("creationTimestamp"))
        return (now_s if since_s is None else min(since_s, now_s)), str(found.get("message") or "")
    return None
