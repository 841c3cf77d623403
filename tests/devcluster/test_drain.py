"""Pod termination in the dev cluster: the preStop sleep, then SIGTERM, then SIGKILL at the
grace period; and, with emulated vLLM pods, a scale-down that lets a request in flight finish."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chiron_operator.api import parse_spec
from chiron_operator.core.enums import Role
from chiron_operator.devcluster.cluster.apiserver import ApiServerHandle
from chiron_operator.devcluster.cluster.kubelet import PORT_ANNOTATION, Kubelet
from chiron_operator.devcluster.cluster.processes import ContainerRuntime, PodProcess, ProcessSpec
from chiron_operator.devcluster.cluster.termination import pre_stop_sleep_s, terminate
from chiron_operator.kube import KubeClient, build_deployment
from tests.devcluster.support import SPEC, eventually, is_ready
from tests.devcluster.test_kubelet import POOLS, in_thread

NAMESPACE = "default"
EMULATOR = ContainerRuntime(
    (sys.executable, "-m", "chiron_operator.emulator"),
    extra_args=("--host", "127.0.0.1", "--uvicorn-log-level", "info"),
)
# ~25 ms a token: the request is still streaming when its pod is deleted, and well past the
# 1 s preStop sleep, so it finishes during the drain that follows SIGTERM.
TOKENS = 160


@pytest.mark.parametrize(
    ("lifecycle", "seconds"),
    [
        ({"preStop": {"sleep": {"seconds": 7}}}, 7.0),
        ({"preStop": {"exec": {"command": ["/bin/sleep", "15"]}}}, 15.0),
        ({"preStop": {"exec": {"command": ["sh", "-c", "sleep 2.5"]}}}, 2.5),
        ({"preStop": {"exec": {"command": ["rm", "-rf", "/"]}}}, 0.0),  # not run: not a sleep
        ({"preStop": {"httpGet": {"path": "/drain", "port": 80}}}, 0.0),
        ({}, 0.0),
    ],
)
def test_pre_stop_sleeps_are_read_and_nothing_else_runs(
    lifecycle: dict[str, Any], seconds: float
) -> None:
    assert pre_stop_sleep_s({"name": "vllm", "lifecycle": lifecycle}) == seconds


async def _term_log(tmp_path: Path, pre_stop_s: float, grace_s: float) -> tuple[str, float]:
    """Run `terminate` on a process that logs SIGTERM and ignores it; its log and duration."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: print('TERM', flush=True))\n"
        "print('UP', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "pod.log"
    async with aiohttp.ClientSession() as session:
        process = PodProcess(
            ProcessSpec(argv=(sys.executable, "-c", script), env={}),
            probe_url=None,
            session=session,
            on_change=lambda: None,
            log_path=log,
        )
        process.start()
        await eventually(lambda: _logged(log, "UP"))
        loop = asyncio.get_running_loop()
        began = loop.time()
        await terminate(process, pre_stop_s=pre_stop_s, grace_s=grace_s)
        return log.read_text(), loop.time() - began


async def _logged(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text()


async def test_sigterm_comes_after_the_pre_stop_sleep_and_sigkill_at_the_grace_period(
    tmp_path: Path,
) -> None:
    text, took_s = await _term_log(tmp_path, pre_stop_s=1.0, grace_s=3.0)
    assert text.split() == ["UP", "TERM"]
    assert 2.9 <= took_s < 4.5  # killed at the end of the grace period, preStop included


@pytest.fixture
async def emulated(apiserver: ApiServerHandle, tmp_path: Path) -> AsyncIterator[Kubelet]:
    async with Kubelet(
        apiserver.url,
        EMULATOR,
        file_sd_path=tmp_path / "sd" / "pods.json",
        log_dir=tmp_path / "pods",
        sync_interval_s=0.1,
        probe_interval_s=0.05,
        max_grace_s=60.0,
    ) as running:
        yield running


async def _stream(port: int, opened: asyncio.Event) -> list[str]:
    body = {"prompt": "x", "max_tokens": TOKENS, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as resp,
    ):
        events = []
        async for line in resp.content:
            if line.startswith(b"data: "):
                events.append(line.decode().removeprefix("data: ").strip())
                opened.set()
        return events


async def test_a_scale_down_lets_the_request_in_flight_finish(
    emulated: Kubelet, kube: KubeClient, tmp_path: Path
) -> None:
    pool = await in_thread(kube.request, "POST", POOLS, body={"metadata": {"name": "p1"}})
    drain = {"endpointDelayS": 1, "requestTimeoutS": 30, "shutdownTimeoutFlag": True}
    spec = parse_spec({**SPEC, "drain": drain})
    body = build_deployment(
        "p1", NAMESPACE, pool["metadata"]["uid"], spec, Role.MIXED, replicas=1, max_num_seqs=8
    )
    await in_thread(kube.apply_deployment, body)
    (pod,) = await eventually(lambda: _ready_pods(kube), timeout=30)
    port = int(pod["metadata"]["annotations"][PORT_ANNOTATION])
    opened = asyncio.Event()
    request = asyncio.create_task(_stream(port, opened))
    await asyncio.wait_for(opened.wait(), 10)

    await in_thread(kube.scale_deployment, NAMESPACE, "p1-mixed", 0)
    # Out of the scrape targets at once, while the request is still being answered.
    await eventually(lambda: _no_targets(tmp_path / "sd" / "pods.json"))
    assert not request.done()
    events = await asyncio.wait_for(request, 30)
    assert events[-1] == "[DONE]"
    assert sum("choices" in json.loads(e) for e in events[:-1]) == TOKENS
    await eventually(lambda: _gone(kube), timeout=15)
    log = (tmp_path / "pods" / f"{NAMESPACE}_{pod['metadata']['name']}.log").read_text()
    assert "draining 1 requests in flight" in log and "still in flight" not in log


async def _ready_pods(kube: KubeClient) -> list[dict[str, Any]] | None:
    pods = await in_thread(kube.list_pods, NAMESPACE, "p1")
    return pods if len(pods) == 1 and all(map(is_ready, pods)) else None


async def _no_targets(path: Path) -> bool:
    return path.exists() and json.loads(path.read_text()) == []


async def _gone(kube: KubeClient) -> bool:
    return not await in_thread(kube.list_pods, NAMESPACE, "p1")
