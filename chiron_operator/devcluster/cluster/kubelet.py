"""A kubelet and Deployment controller for the dev cluster: Deployments become processes.

For every Deployment matching its selector (by default the operator's,
`app.kubernetes.io/managed-by=chiron-operator`) it keeps `spec.replicas` Pod objects, bound to
its node (`devcluster`), and for every such pod a local process from a `PodRuntime`, probed
over HTTP on the container's readinessProbe path. It rolls template changes out within
maxSurge/maxUnavailable, scales down by the ReplicaSet's ranking (pod-deletion-cost honoured),
writes pod and Deployment status, and keeps a Prometheus file_sd file of the ready pods.

Level-triggered: each sync lists the Deployments and pods and acts on the difference, every
`sync_interval_s` and at once when a process changes state. Pods of a deleted Deployment are
garbage-collected by the API server (marked for deletion); the kubelet then stops their
processes and deletes them for good, as a real kubelet does. A deleted pod leaves the file_sd
file at once, sleeps its preStop hook while still serving, then gets SIGTERM and, once its
grace period (at most `max_grace_s`) is over, SIGKILL: see `termination`.

Where a pod runs: 127.0.0.1 on a port of its own (annotation `devcluster.chiron.io/port`), as
every pod shares the loopback address. Probe timings (period, thresholds) are not emulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import aiohttp

from chiron_operator.devcluster.cluster import pods, rollout, termination
from chiron_operator.devcluster.cluster.apiclient import ApiError, AsyncApi
from chiron_operator.devcluster.cluster.filesd import Target, target_groups, write_file_sd
from chiron_operator.devcluster.cluster.objects import metadata_of, random_suffix, timestamp
from chiron_operator.devcluster.cluster.pods import NODE_NAME, PORT_ANNOTATION
from chiron_operator.devcluster.cluster.processes import (
    Launch,
    PodProcess,
    PodRuntime,
    free_port,
    with_port,
)
from chiron_operator.kube.labels import LABEL_MANAGED_BY, MANAGED_BY
from chiron_operator.kube.patches import current_deletion_cost

logger = logging.getLogger(__name__)

MANAGED_SELECTOR: Final = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

Json = dict[str, Any]
PodKey = tuple[str, str]


def _key(obj: Mapping[str, Any]) -> PodKey:
    metadata = metadata_of(obj)
    return str(metadata.get("namespace")), str(metadata.get("name"))


def _terminating(obj: Mapping[str, Any]) -> bool:
    return bool(metadata_of(obj).get("deletionTimestamp"))


class Kubelet:
    """Runs the dev cluster's Deployments as local processes."""

    def __init__(
        self,
        api_url: str,
        runtime: PodRuntime,
        *,
        namespace: str | None = None,
        selector: str = MANAGED_SELECTOR,
        file_sd_path: Path | None = None,
        log_dir: Path | None = None,
        token: str | None = "dummy",
        sync_interval_s: float = 0.2,
        probe_interval_s: float = 0.2,
        max_grace_s: float = 10.0,
    ) -> None:
        self._api_url = api_url
        self._runtime = runtime
        self._namespace = namespace
        self._selector = selector
        self._file_sd_path = file_sd_path
        self._log_dir = log_dir
        self._token = token
        self._sync_interval_s = sync_interval_s
        self._probe_interval_s = probe_interval_s
        self._max_grace_s = max_grace_s
        self._processes: dict[PodKey, PodProcess] = {}
        self._ports: dict[PodKey, int] = {}
        self._reported_ready: dict[PodKey, bool] = {}
        self._terminations: dict[PodKey, asyncio.Task[None]] = {}
        self._created: dict[PodKey, int] = {}
        self._sequence = itertools.count(1)
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._api: AsyncApi | None = None
        self._task: asyncio.Task[None] | None = None

    def process(self, namespace: str, pod: str) -> PodProcess | None:
        """The process running a pod, if any (tests read its pid and readiness)."""
        return self._processes.get((namespace, pod))

    async def __aenter__(self) -> Kubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start syncing in the running event loop."""
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        self._session = aiohttp.ClientSession()
        self._api = AsyncApi(self._api_url, self._session, self._token)
        self._task = asyncio.create_task(self._run(), name="devcluster-kubelet")

    async def stop(self) -> None:
        """Stop syncing and every process (the Pod objects stay, as when a node goes away)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Every process, terminating ones included: stop() is idempotent, and cancelling a
        # termination half way must not leave its process behind.
        processes = list(self._processes.values())
        for task in list(self._terminations.values()):
            task.cancel()
        grace = min(self._max_grace_s, 5.0)
        await asyncio.gather(*(p.stop(grace) for p in processes))
        self._processes.clear()
        if self._file_sd_path is not None:
            write_file_sd(self._file_sd_path, [])
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sync_once()
            except (aiohttp.ClientError, ApiError, TimeoutError) as exc:
                logger.warning("kubelet sync failed: %s", exc)
            except Exception:
                # A controller outlives a bad object: log it, and try again next round.
                logger.exception("kubelet sync failed")
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that races the wait's completion, and stop() would then wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sync_interval_s):
                    await self._wake.wait()

    @property
    def api(self) -> AsyncApi:
        """The API client (available once started)."""
        if self._api is None:
            raise RuntimeError("the kubelet is not started")
        return self._api

    def _path(self, group_version: str, plural: str, namespace: str | None = None) -> str:
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        scope = namespace or self._namespace
        return f"{prefix}/namespaces/{scope}/{plural}" if scope else f"{prefix}/{plural}"

    async def sync_once(self) -> None:
        """One pass: pods' processes and status, then every Deployment, then file_sd."""
        deployments = await self.api.items(self._path("apps/v1", "deployments"), self._selector)
        bound = [
            pod
            for pod in await self.api.items(self._path("v1", "pods"))
            if (pod.get("spec") or {}).get("nodeName") == NODE_NAME
        ]
        await self._sync_pods(bound)
        for deployment in deployments:
            if _terminating(deployment):
                continue  # foreground deletion: its pods go, none are made
            uid = metadata_of(deployment).get("uid")
            owned = [p for p in bound if uid in pods.owner_uids(p) and not _terminating(p)]
            await self._sync_deployment(deployment, owned)
        if self._file_sd_path is not None:
            write_file_sd(self._file_sd_path, target_groups(self._targets(bound)))

    # Pods and their processes.

    async def _sync_pods(self, bound: list[Json]) -> None:
        seen = set()
        for pod in bound:
            key = _key(pod)
            seen.add(key)
            if _terminating(pod):
                self._terminate(key, pod)
                continue
            process = self._processes.get(key) or self._start(pod)
            await self._report(pod, process)
        for key in set(self._processes) - seen:
            self._terminate(key, None)  # deleted for good behind our back: stop the process

    def _start(self, pod: Json) -> PodProcess:
        key = _key(pod)
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        port = self._port_of(pod)
        launch = Launch(
            namespace=key[0],
            pod=key[1],
            port=port,
            command=tuple(container.get("command") or ()),
            args=with_port(container.get("args") or (), port),
            env={e["name"]: str(e.get("value", "")) for e in container.get("env") or []},
            labels=dict(metadata_of(pod).get("labels") or {}),
        )
        probe = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
        process = PodProcess(
            self._runtime.process(launch),
            probe_url=None if probe is None else f"http://127.0.0.1:{port}{probe}",
            session=self.api.session,
            on_change=self._wake.set,
            log_path=None if self._log_dir is None else self._log_dir / f"{key[0]}_{key[1]}.log",
            probe_interval_s=self._probe_interval_s,
        )
        process.start()
        self._processes[key] = process
        self._created.setdefault(key, next(self._sequence))
        return process

    def _port_of(self, pod: Json) -> int:
        key = _key(pod)
        text = str((metadata_of(pod).get("annotations") or {}).get(PORT_ANNOTATION, ""))
        port = int(text) if text.isdigit() else self._allocate_port()
        self._ports[key] = port
        return port

    def _allocate_port(self) -> int:
        while (port := free_port()) in self._ports.values():
            continue
        return port

    def _terminate(self, key: PodKey, pod: Json | None) -> None:
        if key in self._terminations:
            return
        grace = float(metadata_of(pod or {}).get("deletionGracePeriodSeconds") or 0)
        container = (((pod or {}).get("spec") or {}).get("containers") or [{}])[0]
        pre_stop = termination.pre_stop_sleep_s(container)
        task = asyncio.create_task(self._finish(key, pod, pre_stop, min(grace, self._max_grace_s)))
        self._terminations[key] = task

    async def _finish(
        self, key: PodKey, pod: Json | None, pre_stop_s: float, grace_s: float
    ) -> None:
        process = self._processes.get(key)
        try:
            if process is not None:
                await termination.terminate(process, pre_stop_s=pre_stop_s, grace_s=grace_s)
            if pod is not None:
                path = self._path("v1", "pods", key[0]) + f"/{key[1]}"
                with contextlib.suppress(ApiError):
                    await self.api.request("DELETE", path, query={"gracePeriodSeconds": "0"})
        finally:
            self._processes.pop(key, None)
            self._ports.pop(key, None)
            self._reported_ready.pop(key, None)
            self._terminations.pop(key, None)
            self._wake.set()

    async def _report(self, pod: Json, process: PodProcess) -> None:
        status = pods.pod_status(pod, process)
        if pods.status_summary(status) != pods.status_summary(pod.get("status") or {}):
            path = self._path("v1", "pods", _key(pod)[0]) + f"/{_key(pod)[1]}/status"
            pod["status"] = (await self.api.merge_patch(path, {"status": status}))["status"]
        # The controllers act on the readiness the API shows, not on a probe result that
        # landed since: an old pod must never go before its replacement is Ready for all.
        self._reported_ready[_key(pod)] = bool(status["containerStatuses"][0]["ready"])

    def _targets(self, bound: list[Json]) -> list[Target]:
        targets = []
        for pod in bound:
            key = _key(pod)
            process = self._processes.get(key)
            if process is not None and self._reported_ready.get(key) and not _terminating(pod):
                labels = dict(metadata_of(pod).get("labels") or {})
                targets.append(Target(key[0], key[1], self._ports[key], labels))
        return targets

    # Deployments.

    async def _sync_deployment(self, deployment: Json, owned: list[Json]) -> None:
        spec = deployment.get("spec") or {}
        current = rollout.template_hash(spec.get("template") or {})
        states = [self._state(pod) for pod in owned]
        plan = rollout.plan(
            int(spec.get("replicas", 1)), current, states, spec.get("strategy") or {}
        )
        for _ in range(plan.create):
            await self._create_pod(deployment, current)
        for name in plan.delete:
            path = self._path("v1", "pods", _key(deployment)[0]) + f"/{name}"
            with contextlib.suppress(ApiError):
                await self.api.request("DELETE", path)
        if plan.create or plan.delete:
            self._wake.set()
        previous = deployment.get("status") or {}
        status = rollout.deployment_status(
            deployment, states, current, previous=previous, now=timestamp()
        )
        if status != previous:
            path = self._path("apps/v1", "deployments", _key(deployment)[0])
            await self.api.merge_patch(f"{path}/{_key(deployment)[1]}/status", {"status": status})

    def _state(self, pod: Json) -> rollout.PodState:
        key = _key(pod)
        return rollout.PodState(
            name=key[1],
            template_hash=str((metadata_of(pod).get("labels") or {}).get(rollout.HASH_LABEL)),
            ready=self._reported_ready.get(key, False),
            deletion_cost=current_deletion_cost(pod),
            created=self._created.get(key, 0),
        )

    async def _create_pod(self, deployment: Json, template_hash: str) -> None:
        namespace, name = _key(deployment)
        pod_name = f"{name}-{template_hash}-{random_suffix()}"
        port = self._allocate_port()
        body = pods.pod_body(deployment, pod_name, template_hash, port)
        await self.api.request("POST", self._path("v1", "pods", namespace), body=body)
        self._ports[(namespace, pod_name)] = port
        self._created[(namespace, pod_name)] = next(self._sequence)
