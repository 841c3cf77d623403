"""The kubelet stand-in: Deployments become real local processes.

Pods run `python -m http.server` (GET /health answers 200), so readiness, scaling, deletion
costs, rolling updates, restarts and the Prometheus file_sd file are all real.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chiron_operator.core.enums import Role
from chiron_operator.devcluster.cluster.apiserver import ApiServerHandle
from chiron_operator.devcluster.cluster.kubelet import PORT_ANNOTATION, Kubelet
from chiron_operator.devcluster.cluster.rollout import HASH_LABEL
from chiron_operator.kube import (
    KubeClient,
    build_deployment,
    deletion_costs,
    max_num_seqs_of,
    max_num_seqs_patch,
)
from tests.devcluster.support import HealthServerRuntime, eventually, is_ready, pid_alive, pool_spec

NAMESPACE = "default"
DEPLOYMENT = "p1-mixed"


@pytest.fixture
def runtime(tmp_path: Path) -> HealthServerRuntime:
    www = tmp_path / "www"
    www.mkdir()
    return HealthServerRuntime(www)


@pytest.fixture
async def kubelet(
    apiserver: ApiServerHandle, runtime: HealthServerRuntime, tmp_path: Path
) -> AsyncIterator[Kubelet]:
    async with Kubelet(
        apiserver.url,
        runtime,
        file_sd_path=tmp_path / "sd" / "pods.json",
        sync_interval_s=0.1,
        probe_interval_s=0.05,
        max_grace_s=2.0,
    ) as running:
        yield running


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


POOLS = "/apis/chiron.io/v1alpha1/namespaces/default/llmservingpools"


@pytest.fixture
async def pool_uid(kube: KubeClient) -> str:
    """The pool owning the Deployment (a Deployment with a missing owner is collected)."""
    pool = await in_thread(kube.request, "POST", POOLS, body={"metadata": {"name": "p1"}})
    return str(pool["metadata"]["uid"])


async def apply(kube: KubeClient, replicas: int, pool_uid: str) -> dict[str, Any]:
    body = build_deployment(
        "p1", NAMESPACE, pool_uid, pool_spec(), Role.MIXED, replicas=replicas, max_num_seqs=8
    )
    applied: dict[str, Any] = await in_thread(kube.apply_deployment, body)
    return applied


async def ready_pods(kube: KubeClient, count: int) -> list[dict[str, Any]]:
    """Wait until exactly `count` pods are ready and none is left over; returns them."""

    async def probe() -> list[dict[str, Any]] | None:
        pods = await in_thread(kube.list_pods, NAMESPACE, "p1")
        ready = [p for p in pods if is_ready(p)]
        return ready if len(ready) == len(pods) == count else None

    if count == 0:
        await eventually(lambda: _no_pods(kube))
        return []
    return await eventually(probe)


async def _no_pods(kube: KubeClient) -> bool:
    return not await in_thread(kube.list_pods, NAMESPACE, "p1")


def pid_of(kubelet: Kubelet, pod: dict[str, Any]) -> int:
    process = kubelet.process(NAMESPACE, pod["metadata"]["name"])
    assert process is not None and process.pid is not None
    return process.pid


async def test_scaling_with_deletion_costs(
    kubelet: Kubelet, kube: KubeClient, pool_uid: str
) -> None:
    await apply(kube, replicas=0, pool_uid=pool_uid)
    await in_thread(kube.scale_deployment, NAMESPACE, DEPLOYMENT, 1)
    (older,) = await ready_pods(kube, 1)
    await in_thread(kube.scale_deployment, NAMESPACE, DEPLOYMENT, 2)
    pods = await ready_pods(kube, 2)
    status = (await in_thread(kube.get_deployment, NAMESPACE, DEPLOYMENT))["status"]
    assert (status["readyReplicas"], status["updatedReplicas"]) == (2, 2)

    # Left alone, the ReplicaSet removes the newest pod. The older one is idle, so the
    # operator marks it cheapest, and it goes instead.
    idle = older["metadata"]["name"]
    (busy,) = {p["metadata"]["name"] for p in pods} - {idle}
    costs = deletion_costs({idle: 0.5, busy: 7.0}, to_remove=1)
    assert costs == {idle: -1, busy: 0}
    assert await in_thread(kube.apply_deletion_costs, NAMESPACE, pods, costs) == [idle]
    idle_pid = pid_of(kubelet, older)

    await in_thread(kube.scale_deployment, NAMESPACE, DEPLOYMENT, 1)
    (survivor,) = await ready_pods(kube, 1)
    assert survivor["metadata"]["name"] == busy
    await eventually(lambda: _dead(idle_pid))


async def _dead(pid: int) -> bool:
    return not pid_alive(pid)


async def test_rolling_args_change_never_loses_ready_pods(
    kubelet: Kubelet, kube: KubeClient, pool_uid: str, runtime: HealthServerRuntime
) -> None:
    await apply(kube, replicas=2, pool_uid=pool_uid)
    old = await ready_pods(kube, 2)
    old_pids = [pid_of(kubelet, p) for p in old]
    live = await in_thread(kube.get_deployment, NAMESPACE, DEPLOYMENT)
    args = live["spec"]["template"]["spec"]["containers"][0]["args"]
    patched = await in_thread(
        kube.patch_deployment, NAMESPACE, DEPLOYMENT, max_num_seqs_patch(args, 16)
    )
    assert patched["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "vllm/vllm-openai:v0.11.0"
    )

    fewest_ready = 2
    old_hash = old[0]["metadata"]["labels"][HASH_LABEL]

    async def rolled() -> list[dict[str, Any]] | None:
        nonlocal fewest_ready
        pods = await in_thread(kube.list_pods, NAMESPACE, "p1")
        fewest_ready = min(fewest_ready, sum(is_ready(p) for p in pods))
        new = [p for p in pods if p["metadata"]["labels"][HASH_LABEL] != old_hash]
        return new if len(new) == len(pods) == 2 and all(map(is_ready, new)) else None

    new = await eventually(rolled, interval=0.02)
    assert fewest_ready == 2
    assert not {p["metadata"]["name"] for p in new} & {p["metadata"]["name"] for p in old}
    for pid in old_pids:
        await eventually(lambda pid=pid: _dead(pid))
    for pod in new:
        launch = next(la for la in runtime.launches if la.pod == pod["metadata"]["name"])
        assert max_num_seqs_of(launch.args) == 16
        assert launch.args[launch.args.index("--port") + 1] == str(launch.port)
        assert pod["metadata"]["annotations"][PORT_ANNOTATION] == str(launch.port)


async def test_file_sd_lists_ready_pods(
    kubelet: Kubelet, kube: KubeClient, pool_uid: str, tmp_path: Path
) -> None:
    await apply(kube, replicas=2, pool_uid=pool_uid)
    pods = await ready_pods(kube, 2)
    path = tmp_path / "sd" / "pods.json"

    async def listed() -> list[dict[str, Any]] | None:
        groups: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
        return groups if len(groups) == 2 else None

    groups = await listed() or await eventually(listed)
    assert [g["labels"] for g in groups] == [
        {"namespace": NAMESPACE, "pod": name, "chiron_io_role": "mixed", "chiron_io_pool": "p1"}
        for name in sorted(p["metadata"]["name"] for p in pods)
    ]
    async with aiohttp.ClientSession() as http:
        for group in groups:
            (target,) = group["targets"]
            assert target.startswith("127.0.0.1:")
            async with http.get(f"http://{target}/health") as response:
                assert response.status == 200

    await in_thread(kube.scale_deployment, NAMESPACE, DEPLOYMENT, 0)
    await ready_pods(kube, 0)
    assert json.loads(path.read_text()) == []


async def test_a_crashed_process_is_restarted(
    kubelet: Kubelet, kube: KubeClient, pool_uid: str
) -> None:
    await apply(kube, replicas=1, pool_uid=pool_uid)
    (pod,) = await ready_pods(kube, 1)
    os.kill(pid_of(kubelet, pod), signal.SIGKILL)

    async def restarted() -> bool:
        (current,) = await in_thread(kube.list_pods, NAMESPACE, "p1")
        restarts = current["status"]["containerStatuses"][0]["restartCount"]
        return bool(restarts == 1 and is_ready(current))

    await eventually(restarted)


async def test_deleting_the_pool_stops_its_processes(
    kubelet: Kubelet, kube: KubeClient, pool_uid: str
) -> None:
    await apply(kube, replicas=2, pool_uid=pool_uid)
    pids = [pid_of(kubelet, p) for p in await ready_pods(kube, 2)]
    await in_thread(kube.request, "DELETE", f"{POOLS}/p1")
    await ready_pods(kube, 0)
    assert await in_thread(kube.get_deployment, NAMESPACE, DEPLOYMENT) is None
    assert not any(pid_alive(pid) for pid in pids)


async def test_a_deleted_pod_is_drained_and_replaced(
    kubelet: Kubelet, kube: KubeClient, pool_uid: str
) -> None:
    await apply(kube, replicas=1, pool_uid=pool_uid)
    (pod,) = await ready_pods(kube, 1)
    pid = pid_of(kubelet, pod)
    name = pod["metadata"]["name"]
    await in_thread(kube.request, "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
    (replacement,) = await ready_pods(kube, 1)
    assert replacement["metadata"]["name"] != name
    await eventually(lambda: _dead(pid))
