"""PATCH bodies by content type: JSON patch, merge patch, strategic merge patch."""

from __future__ import annotations

from typing import Any

import pytest

from chiron_operator.devcluster.cluster.patching import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    apply_patch,
)


def deployment() -> dict[str, Any]:
    return {
        "metadata": {"name": "d", "finalizers": ["a"], "labels": {"x": "1"}},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm:1",
                            "args": ["m", "--max-num-seqs", "8"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                        },
                        {"name": "sidecar", "image": "s:1"},
                    ],
                    "tolerations": [{"key": "gpu", "operator": "Exists"}],
                }
            }
        },
    }


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


def smp(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    return apply_patch(obj, patch, STRATEGIC_MERGE_PATCH, custom=False)


def test_strategic_merge_keeps_the_image_when_patching_args() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "args": ["m"]}]}}}}
    vllm, sidecar = containers(smp(deployment(), patch))
    assert vllm["image"] == "vllm:1"
    assert vllm["args"] == ["m"]  # a list of scalars is replaced
    assert vllm["env"] == deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
    assert sidecar == {"name": "sidecar", "image": "s:1"}


def test_strategic_merge_merges_named_lists_by_their_keys() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                            "ports": [{"containerPort": 8000, "protocol": "TCP"}],
                        }
                    ],
                    "tolerations": [{"key": "other", "operator": "Exists"}],
                }
            }
        }
    }
    patched = smp(deployment(), patch)
    vllm = containers(patched)[0]
    assert vllm["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert vllm["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    # Tolerations have no merge key in Kubernetes: the list is replaced.
    assert patched["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "other", "operator": "Exists"}
    ]


def test_strategic_merge_directives() -> None:
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"x": None}},
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "vllm"}],
                    "containers": [
                        {"name": "sidecar", "$patch": "delete"},
                        {"name": "vllm", "env": [{"name": "A", "$patch": "delete"}]},
                    ],
                }
            }
        },
    }
    patched = smp(deployment(), patch)
    assert patched["metadata"]["finalizers"] == []
    assert patched["metadata"]["labels"] == {}
    assert [c["name"] for c in containers(patched)] == ["vllm"]
    assert containers(patched)[0]["env"] == [{"name": "B", "value": "2"}]


def test_strategic_merge_unions_finalizers_and_replaces_maps_on_request() -> None:
    patched = smp(deployment(), {"metadata": {"finalizers": ["b", "a"]}})
    assert patched["metadata"]["finalizers"] == ["a", "b"]
    replaced = smp(deployment(), {"metadata": {"labels": {"$patch": "replace", "y": "2"}}})
    assert replaced["metadata"]["labels"] == {"y": "2"}


def test_merge_patch_replaces_lists_and_deletes_nulls() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "args": []}]}}}}
    patched = apply_patch(deployment(), patch, MERGE_PATCH, custom=False)
    assert containers(patched) == [{"name": "vllm", "args": []}]
    patched = apply_patch(deployment(), {"metadata": {"labels": None}}, MERGE_PATCH, custom=True)
    assert "labels" not in patched["metadata"]


def test_json_patch_failures_are_422() -> None:
    ops = [{"op": "test", "path": "/metadata/name", "value": "other"}]
    with pytest.raises(PatchError) as failed:
        apply_patch(deployment(), ops, JSON_PATCH, custom=False)
    assert failed.value.status == 422
    with pytest.raises(PatchError) as missing:
        apply_patch(deployment(), [{"op": "remove", "path": "/nope"}], JSON_PATCH, custom=False)
    assert missing.value.status == 422
    ok = [{"op": "add", "path": "/metadata/finalizers/-", "value": "b"}]
    assert apply_patch(deployment(), ok, JSON_PATCH, custom=False)["metadata"]["finalizers"] == [
        "a",
        "b",
    ]


@pytest.mark.parametrize(
    ("content_type", "custom"),
    [(STRATEGIC_MERGE_PATCH, True), (APPLY_PATCH, False), ("text/plain", False)],
)
def test_unsupported_patch_types_are_415(content_type: str, custom: bool) -> None:
    with pytest.raises(PatchError) as failed:
        apply_patch(deployment(), {"metadata": {}}, content_type, custom=custom)
    assert failed.value.status == 415


def test_the_original_is_never_modified() -> None:
    original = deployment()
    smp(original, {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "x": 1}]}}}})
    assert original == deployment()
