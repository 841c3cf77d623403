"""Patches for the operator's actuators, as strategic-merge patches. Pure: no I/O.

Strategic merge is what makes these small: `containers` merge by `name`, so a patch that names
the `vllm` container and gives only `args` keeps its image, env and probes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chiron_operator.kube import labels as lb
from chiron_operator.kube.deployments import with_max_num_seqs


def replicas_patch(replicas: int, booked: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Set a Deployment's replicas and record them as the operator's last applied count.

    Both go in one patch so that the record can never disagree with what the operator wrote;
    a later difference is then someone else's change (see `find_conflicts`). `booked` are the
    role's restart and resize stamps (`bookings.booking_annotations`), written with the change
    for the same reason.
    """
    if replicas < 0:
        raise ValueError(f"replicas must not be negative, got {replicas}")
    annotations = {**(booked or {}), lb.ANNOTATION_APPLIED_REPLICAS: str(replicas)}
    return {"metadata": {"annotations": annotations}, "spec": {"replicas": replicas}}


def max_num_seqs_patch(
    args: Sequence[str], max_num_seqs: int, booked: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Set --max-num-seqs in the `vllm` container's `args` (the current or freshly built ones).

    Changing the pod template rolls the role's pods (surge, never below the ready count); the
    annotation records the value for readers that should not parse argv. `booked` (the role's
    restart log and resize stamps) goes on the Deployment itself, not the template, in the
    same patch: the restart and its record are one write.
    """
    if max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be at least 1, got {max_num_seqs}")
    patch: dict[str, Any] = {"metadata": {"annotations": dict(booked)}} if booked else {}
    return {
        **patch,
        "spec": {
            "template": {
                "metadata": {"annotations": {lb.ANNOTATION_MAX_NUM_SEQS: str(max_num_seqs)}},
                "spec": {
                    "containers": [
                        {"name": lb.CONTAINER_NAME, "args": with_max_num_seqs(args, max_num_seqs)}
                    ]
                },
            }
        },
    }


def pod_deletion_cost_patch(cost: int | None) -> dict[str, Any]:
    """Set a pod's deletion cost (lower goes first on scale-down); None removes the annotation."""
    value = None if cost is None else str(cost)
    return {"metadata": {"annotations": {lb.ANNOTATION_DELETION_COST: value}}}


def deletion_costs(pods_with_load: Mapping[str, float], to_remove: int) -> dict[str, int]:
    """Deletion costs that make the ReplicaSet remove the `to_remove` least-loaded pods first.

    Every pod gets a cost, so marks left by an earlier scale-down are reset: the victims get
    -to_remove..-1 (least loaded most negative), every other pod 0, Kubernetes' default. Ties
    in load are broken by name, so that the same inputs always mark the same pods.
    """
    count = max(0, min(to_remove, len(pods_with_load)))
    ranked = sorted(pods_with_load, key=lambda pod: (pods_with_load[pod], pod))
    costs = dict.fromkeys(pods_with_load, 0)
    for position, pod in enumerate(ranked[:count]):
        costs[pod] = position - count
    return costs


def current_deletion_cost(pod: Mapping[str, Any]) -> int:
    """A pod's deletion cost as the ReplicaSet controller reads it (0 when unset or invalid)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(lb.ANNOTATION_DELETION_COST)
    try:
        return int(text) if isinstance(text, str) else 0
    except ValueError:
        return 0
