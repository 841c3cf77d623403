"""What the operator, the gateway and the dev cluster's clients read of a Pod. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
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
