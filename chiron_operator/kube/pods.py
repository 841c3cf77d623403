"""What the operator, the gateway and the dev cluster's clients read of a Pod. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_serving(pod: Mapping[str, Any]) -> bool:
    """Ready and not terminating: a pod that may take new requests.

    A pod being deleted can still report Ready while it drains (its preStop hook runs first),
    so the deletion timestamp is what tells it apart.
    """
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
