"""Reading the pool's pods, gateway replicas and targets from Kubernetes objects (pure parts)."""

from __future__ import annotations

from typing import Any

from chiron_operator.core.enums import Role
from chiron_operator.gateway.config import PodInfo, Share
from chiron_operator.gateway.discovery import gateway_share, pod_info, targets_of


def pod(
    name: str,
    *,
    role: str | None = "mixed",
    ready: bool = True,
    ip: str | None = "10.0.0.7",
    deleting: bool = False,
    component: str | None = None,
    annotations: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> dict[str, Any]:
    labels = {"chiron.io/pool": "llama"}
    if role is not None:
        labels["chiron.io/role"] = role
    if component is not None:
        labels["app.kubernetes.io/component"] = component
    metadata: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations or {}}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-07T10:00:00Z"
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]
    }
    if ip is not None:
        status["podIP"] = ip
    container = {
        "name": "vllm",
        "args": args or [],
        "ports": [{"name": "http", "containerPort": 8000}],
    }
    return {"metadata": metadata, "status": status, "spec": {"containers": [container]}}


def test_a_ready_vllm_pod_with_its_cap_from_the_annotation() -> None:
    found = pod_info(pod("a", annotations={"chiron.io/max-num-seqs": "32"}))
    assert found == PodInfo("a", Role.MIXED, "http://10.0.0.7:8000", 32, True)


def test_the_cap_from_the_args_when_there_is_no_annotation() -> None:
    assert pod_info(pod("a", args=["--max-num-seqs", "16"])).max_num_seqs == 16  # type: ignore[union-attr]
    assert pod_info(pod("a", args=["--max-num-seqs=8"])).max_num_seqs == 8  # type: ignore[union-attr]
    assert pod_info(pod("a")).max_num_seqs is None  # type: ignore[union-attr]


def test_terminating_unready_or_unaddressed_pods_take_nothing_new() -> None:
    for found in (pod_info(pod("a", deleting=True)), pod_info(pod("a", ready=False))):
        assert found is not None and not found.ready
    unaddressed = pod_info(pod("a", ip=None))
    assert unaddressed is not None and not unaddressed.ready and unaddressed.url == ""


def test_pods_without_a_role_are_not_vllm_pods() -> None:
    assert pod_info(pod("gw", role=None, component="gateway")) is None
    assert pod_info(pod("x", role="bogus")) is None


def test_the_port_from_an_annotation_when_told_so() -> None:
    found = pod_info(
        pod("a", annotations={"devcluster.chiron.io/port": "41234"}), "devcluster.chiron.io/port"
    )
    assert found is not None and found.url == "http://10.0.0.7:41234"


def test_gateway_share_counts_ready_replicas_and_this_one() -> None:
    pods = {
        n: pod(n, role=None, component="gateway", ready=r)
        for n, r in (("gw-a", True), ("gw-b", True), ("gw-c", False))
    }
    pods["vllm"] = pod("vllm")
    assert gateway_share(pods, "gw-b") == Share(2, 1)
    assert gateway_share(pods, "gw-c") == Share(3, 2)  # not ready yet, but already serving
    assert gateway_share({}, "") == Share(1, 0)


def test_targets_apply_only_when_the_pool_enforces() -> None:
    status = {"roles": {"mixed": {"targetBatchSizeSeqs": 12}, "batch": {}}}
    enforcing = {"spec": {"mode": "Enforce"}, "status": status}
    assert targets_of(enforcing) == {Role.INTERACTIVE: None, Role.MIXED: 12, Role.BATCH: None}
    observing = {"spec": {"mode": "Observe"}, "status": status}
    assert targets_of(observing) == dict.fromkeys(Role)
