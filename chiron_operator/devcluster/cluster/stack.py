"""The whole dev cluster in one object: API server, kubelet, Prometheus, each client's identity.

`DevStack` runs the API server and the kubelet stand-in on an event loop of their own, in a
background thread, so that a caller may be synchronous (a pytest test, the demo's terminal loop)
and block without stalling the cluster. The kubelet runs every Deployment of the operator as
processes (`runtimes.PoolRuntime`: vLLM as `chiron-emulator`, the gateway as `chiron-gateway`) and
writes the file_sd file a private Prometheus scrapes every `scrape_interval_s`. Every API request
is recorded in `audit` with the identity that made it: each client gets a kubeconfig whose bearer
token is its name (`kubeconfig("operator-a")`).

Stopping the stack stops every process it started: pods first, then Prometheus, then the
server. It is idempotent and safe to call from a `finally` or a signal handler's aftermath.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from chiron_operator.devcluster.cluster.apiserver import (
    ApiServerHandle,
    DevApiServer,
    start_apiserver,
    write_kubeconfig,
)
from chiron_operator.devcluster.cluster.audit import AuditLog
from chiron_operator.devcluster.cluster.kubelet import Kubelet
from chiron_operator.devcluster.cluster.processes import ContainerRuntime
from chiron_operator.devcluster.cluster.prometheus import PrometheusProcess, StaticJob
from chiron_operator.devcluster.cluster.runtimes import PoolRuntime
from chiron_operator.kube import KubeClient

T = TypeVar("T")

KUBELET: Final = "kubelet"
HARNESS: Final = "harness"
EMULATOR: Final = (sys.executable, "-m", "chiron_operator.emulator")
CALL_TIMEOUT_S: Final = 60.0
PEERINGS: Final = "/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings"
CLUSTER_PEERINGS: Final = "/apis/kopf.dev/v1/clusterkopfpeerings"


class LoopThread:
    """An asyncio event loop running in a daemon thread; coroutines are submitted to it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop; the caller may wait on the future or not."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = CALL_TIMEOUT_S) -> T:
        """Run `coro` on the loop and wait for its result."""
        return self.submit(coro).result(timeout_s)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass(frozen=True, slots=True)
class StackOptions:
    """What the stack runs. `pods_namespace` None runs the operator's pods of every namespace."""

    workdir: Path
    namespaces: tuple[str, ...] = ("llm",)
    pods: bool = True
    pods_namespace: str | None = None
    prometheus: bool = True
    scrape_interval_s: float = 1.0
    emulator_args: tuple[str, ...] = ()
    static_jobs: tuple[StaticJob, ...] = ()
    # Caps the pods' terminationGracePeriodSeconds (preStop sleep included): tests keep it short
    # so that deleted pods go quickly; the demo honours its pool's drain in full.
    max_grace_s: float = 5.0
    # Requests kmock keeps for its own assertions. kmock matches every request against every
    # one it kept, so a long list makes each request slower; the audit log is the record here.
    request_limit: int = 20


class DevStack:
    """The dev cluster, started and stopped as one."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.audit = AuditLog()
        self.loop = LoopThread("devcluster")
        self.url = ""
        self.kubelet: Kubelet | None = None
        self.prometheus: PrometheusProcess | None = None
        self._server: ApiServerHandle | None = None
        self._clients: list[KubeClient] = []

    @property
    def file_sd_path(self) -> Path:
        return self.options.workdir / "file_sd" / "pods.json"

    @property
    def server(self) -> DevApiServer:
        if self._server is None:
            raise RuntimeError("the stack is not started")
        return self._server.emulator

    def start(self) -> DevStack:
        """Start everything; on any failure, stop what did start and re-raise."""
        self.options.workdir.mkdir(parents=True, exist_ok=True)
        self.loop.start()
        try:
            self.url = self.loop.run(self._start_cluster())
            if self.options.prometheus:
                self.prometheus = self.new_prometheus(self.options.workdir / "prometheus")
        except BaseException:
            self.stop()
            raise
        return self

    async def _start_cluster(self) -> str:
        emulator = DevApiServer(
            namespaces=self.options.namespaces,
            on_request=self.audit.record,
            request_limit=self.options.request_limit,
        )
        url, self._server = await start_apiserver(emulator=emulator)
        if self.options.pods:
            vllm = ContainerRuntime(
                EMULATOR, extra_args=("--host", "127.0.0.1", *self.options.emulator_args)
            )
            runtime = PoolRuntime(
                vllm, kubeconfig=self.kubeconfig, volumes=self.options.workdir / "volumes"
            )
            self.kubelet = Kubelet(
                url,
                runtime,
                namespace=self.options.pods_namespace,
                file_sd_path=self.file_sd_path,
                log_dir=self.options.workdir / "pods",
                token=KUBELET,
                max_grace_s=self.options.max_grace_s,
            )
            await self.kubelet.start()
        return url

    def new_prometheus(self, workdir: Path) -> PrometheusProcess:
        """A (further) Prometheus scraping the stack's pods and static jobs; the caller stops it."""
        prometheus = PrometheusProcess(
            workdir,
            file_sd_paths=(self.file_sd_path,) if self.options.pods else (),
            static_jobs=self.options.static_jobs,
            scrape_interval_s=self.options.scrape_interval_s,
        )
        return prometheus.start()

    def stop(self) -> None:
        """Stop pods, Prometheus, clients and the server. Idempotent."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.loop.loop.is_running():
            try:
                self.loop.run(self._stop_cluster(), timeout_s=30.0)
            finally:
                self.loop.stop()
        if self.prometheus is not None:
            self.prometheus.stop()

    async def _stop_cluster(self) -> None:
        kubelet, self.kubelet = self.kubelet, None
        if kubelet is not None:
            await kubelet.stop()
        server, self._server = self._server, None
        if server is not None:
            await server.close()

    def kubeconfig(self, identity: str) -> Path:
        """A kubeconfig whose bearer token is `identity` (how the audit log names the client)."""
        # The kubernetes client reads a kubeconfig path as a list split on ':' (as $KUBECONFIG),
        # and ServiceAccount identities are full of colons.
        path = self.options.workdir / "kubeconfigs" / identity.replace(":", "_")
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_kubeconfig(path, self.url, token=identity)

    def client(self, identity: str = HARNESS) -> KubeClient:
        """A synchronous API client (closed with the stack)."""
        client = KubeClient.from_kubeconfig(self.kubeconfig(identity))
        self._clients.append(client)
        return client

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run an async callable on the cluster's loop (e.g. to read the store consistently)."""

        async def run() -> T:
            return await fn()

        return self.loop.run(run())

    def create_peering(self, name: str, namespace: str | None) -> None:
        """The peering object kopf needs before it starts (a ClusterKopfPeering for None)."""
        body = {"metadata": {"name": name}}
        client = self.client()
        if namespace is None:
            client.request("POST", CLUSTER_PEERINGS, body=body)
        else:
            client.request("POST", PEERINGS, params={"namespace": namespace}, body=body)

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
