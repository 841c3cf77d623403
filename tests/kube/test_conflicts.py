"""Conflict detection: other autoscalers and external replica changes."""

from __future__ import annotations

from typing import Any

from chiron_operator.core.enums import Role
from chiron_operator.kube import ConflictReason, find_conflicts
from tests.kube.support import deployment


def hpa(name: str, target: str, namespace: str = "llm", kind: str = "Deployment") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target}},
    }


def scaled_object(name: str, target: str) -> dict[str, Any]:
    # KEDA defaults kind and apiVersion; only the name is required.
    return {
        "metadata": {"name": name, "namespace": "llm"},
        "spec": {"scaleTargetRef": {"name": target}},
    }


def test_no_conflicts_for_an_untouched_pool() -> None:
    deployments = [deployment(role) for role in Role]
    assert find_conflicts(deployments, [], [], {}) == []


def test_hpas_and_scaled_objects_targeting_a_pool_deployment() -> None:
    deployments = [deployment(Role.MIXED), deployment(Role.BATCH)]
    hpas = [
        hpa("kv", "llama-70b-mixed"),
        hpa("other-ns", "llama-70b-mixed", namespace="elsewhere"),
        hpa("sts", "llama-70b-batch", kind="StatefulSet"),
        hpa("unrelated", "web"),
    ]
    found = find_conflicts(deployments, hpas, [scaled_object("queue", "llama-70b-batch")])
    assert [(c.kind, c.name, c.deployment, c.reason) for c in found] == [
        ("HorizontalPodAutoscaler", "kv", "llama-70b-mixed", ConflictReason.HPA_TARGETS_DEPLOYMENT),
        (
            "ScaledObject",
            "queue",
            "llama-70b-batch",
            ConflictReason.SCALED_OBJECT_TARGETS_DEPLOYMENT,
        ),
    ]
    assert found[0].message == "HorizontalPodAutoscaler llm/kv scales Deployment llama-70b-mixed"


def test_external_replica_changes_against_the_annotation() -> None:
    scaled = deployment(Role.MIXED, replicas=2)
    scaled["spec"]["replicas"] = 5  # e.g. `kubectl scale`: the annotation still says 2
    (conflict,) = find_conflicts([scaled], [], [], {"llama-70b-mixed": 5})
    assert conflict.reason is ConflictReason.REPLICAS_CHANGED_EXTERNALLY
    assert (conflict.kind, conflict.name, conflict.namespace) == (
        "Deployment",
        "llama-70b-mixed",
        "llm",
    )
    assert "5 replicas" in conflict.message and "applied 2" in conflict.message


def test_last_applied_is_the_fallback_without_an_annotation() -> None:
    bare = deployment(Role.MIXED, replicas=2)
    del bare["metadata"]["annotations"]
    assert find_conflicts([bare], [], [], {"llama-70b-mixed": 2}) == []
    assert len(find_conflicts([bare], [], [], {"llama-70b-mixed": 3})) == 1
    assert find_conflicts([bare], [], []) == []  # nothing known: no claim of a conflict
