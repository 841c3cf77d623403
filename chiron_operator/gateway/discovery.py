"""The pool's pods and targets, watched through the Kubernetes API (the gateway's only reads).

Three watches, each with the least the gateway's RBAC grants (get, list and watch on pods; get
and watch on its pool):

- the pool's vLLM pods (`chiron.io/pool=<pool>`, with a role label): role, readiness, address,
  `--max-num-seqs`; a pod being deleted stops taking requests at once;
- the pool's gateway pods (same pool label, component `gateway`): how many replicas share the
  caps and which share is this one's;
- the pool object: each role's target batch size from its status (the local controller's fast
  path), applied within the watch's latency, with no pod restart.

The `kubernetes` client is synchronous: each watch runs in a worker thread and hands whole
snapshots to the event loop, so the dispatcher only ever sees consistent states. A watch that
fails is restarted after a short pause and relists; nothing is scaled or dropped on a failure.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from chiron_operator.api.base import GROUP, PLURAL, VERSION
from chiron_operator.api.spec import ROLE_DEFAULTS
from chiron_operator.core.enums import Role
from chiron_operator.gateway.config import BatchCapacity, GatewayConfig, PodInfo, Share
from chiron_operator.gateway.dispatcher import Dispatcher
from chiron_operator.kube import labels as lb
from chiron_operator.kube.client import KubeClient
from chiron_operator.kube.pods import is_serving, pod_max_num_seqs

log = logging.getLogger(__name__)

DEFAULT_POD_PORT: Final = 8000
WATCH_TIMEOUT_S: Final = 60
RETRY_PAUSE_S: Final = 2.0

Json = dict[str, Any]


def pod_info(pod: Mapping[str, Any], port_annotation: str = "") -> PodInfo | None:
    """A vLLM pod of the pool as the dispatcher needs it; None for pods that are not one."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    try:
        role = Role(str(labels.get(lb.LABEL_ROLE)))
    except ValueError:
        return None
    status = pod.get("status") or {}
    ip = status.get("podIP")
    port = _port(pod, port_annotation)
    ready = bool(ip) and port is not None and is_serving(pod)
    url = f"http://{ip}:{port}" if ip and port is not None else ""
    return PodInfo(str(metadata.get("name")), role, url, pod_max_num_seqs(pod), ready)


def _vllm_container(pod: Mapping[str, Any]) -> Json:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    named = [c for c in containers if c.get("name") == lb.CONTAINER_NAME]
    return dict((named or containers)[0])


def _port(pod: Mapping[str, Any], annotation: str) -> int | None:
    if annotation:
        text = str(((pod.get("metadata") or {}).get("annotations") or {}).get(annotation, ""))
        return int(text) if text.isdigit() else None
    ports = _vllm_container(pod).get("ports") or []
    named = [p for p in ports if p.get("name") == lb.PORT_NAME] or ports
    value = named[0].get("containerPort") if named else DEFAULT_POD_PORT
    return int(value) if isinstance(value, int) else DEFAULT_POD_PORT


def gateway_share(pods: Mapping[str, Json], own_name: str) -> Share:
    """This replica's share: ready gateway pods by name, this one counted even when not yet
    ready (it serves already, so it must take a share that leaves the others' intact)."""
    names = sorted(
        str((p.get("metadata") or {}).get("name"))
        for p in pods.values()
        if _is_gateway(p) and is_serving(p)
    )
    if own_name not in names:
        names = sorted([*names, own_name or "~self"])
    return Share(len(names), names.index(own_name or "~self"))


def _is_gateway(pod: Mapping[str, Any]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(lb.LABEL_COMPONENT) == lb.GATEWAY_COMPONENT


def targets_of(pool: Mapping[str, Any]) -> dict[Role, int | None]:
    """Each role's target batch size from the pool's status (None where not published yet).

    Only an enforcing pool's targets cap pods: in Observe and Recommend the operator acts on
    nothing, and the gateway applying its targets would be acting.
    """
    if (pool.get("spec") or {}).get("mode") != "Enforce":
        return dict.fromkeys(Role)
    roles = (pool.get("status") or {}).get("roles") or {}
    found: dict[Role, int | None] = {}
    for role in Role:
        value = (roles.get(role.value) or {}).get("targetBatchSizeSeqs")
        found[role] = value if isinstance(value, int) and value > 0 else None
    return found


def capacity_of(pool: Mapping[str, Any]) -> BatchCapacity | None:
    """The most output tokens/s batch work could get at the pool's largest size: every batch
    and mixed instance it may run, at the operator's estimate of one batch instance's rate
    (`status.signals.batchInstanceTokensPerS`); None until the operator publishes it."""
    signals = (pool.get("status") or {}).get("signals") or {}
    per_instance = signals.get("batchInstanceTokensPerS")
    if not isinstance(per_instance, (int, float)) or per_instance <= 0:
        return None
    roles = (pool.get("spec") or {}).get("roles") or {}
    counts: dict[Role, int] = {}
    for role in (Role.BATCH, Role.MIXED):
        value = (roles.get(role.value) or {}).get("maxReplicas")
        counts[role] = value if isinstance(value, int) else ROLE_DEFAULTS[role].max_replicas
    instances = counts[Role.BATCH] + counts[Role.MIXED]
    detail = (
        f"{counts[Role.BATCH]} batch + {counts[Role.MIXED]} mixed instances at "
        f"{per_instance:.0f} tokens/s each"
    )
    return BatchCapacity(instances * float(per_instance), detail)


class PoolWatcher:
    """Keeps a dispatcher's pods, share and targets current from the Kubernetes API."""

    def __init__(self, config: GatewayConfig, dispatcher: Dispatcher, kube: KubeClient) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.kube = kube
        self.stopped = threading.Event()
        self._pods: dict[str, Json] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        threads = [
            threading.Thread(target=self._watch_pods, args=(loop,), daemon=True),
            threading.Thread(target=self._watch_pool, args=(loop,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            await asyncio.Event().wait()  # until cancelled with the app
        finally:
            self.stopped.set()

    def _watch_pods(self, loop: asyncio.AbstractEventLoop) -> None:
        core = k8s.CoreV1Api(self.kube.api_client)
        selector = f"{lb.LABEL_POOL}={self.config.pool}"

        def events() -> Iterator[tuple[str, Json]]:
            stream = k8s_watch.Watch().stream(  # type: ignore[no-untyped-call]
                core.list_namespaced_pod,
                self.config.namespace,
                label_selector=selector,
                timeout_seconds=WATCH_TIMEOUT_S,
            )
            serialize = self.kube.api_client.sanitize_for_serialization
            for event in stream:
                pod = serialize(event["object"])  # type: ignore[no-untyped-call]
                yield event["type"], pod

        self._forever("pods", events, lambda kind, pod: self._on_pod(loop, kind, pod))

    def _on_pod(self, loop: asyncio.AbstractEventLoop, kind: str, pod: Json) -> None:
        name = str((pod.get("metadata") or {}).get("name"))
        if kind == "DELETED":
            self._pods.pop(name, None)
        else:
            self._pods[name] = pod
        snapshot = dict(self._pods)
        loop.call_soon_threadsafe(self._apply_pods, snapshot)

    def _apply_pods(self, pods: dict[str, Json]) -> None:
        annotation = self.config.pod_port_annotation
        infos = [info for p in pods.values() if (info := pod_info(p, annotation)) is not None]
        self.dispatcher.set_share(gateway_share(pods, self.config.pod_name))
        self.dispatcher.set_pods(infos)

    def _apply_pool(self, targets: dict[Role, int | None], capacity: BatchCapacity | None) -> None:
        self.dispatcher.set_targets(targets)
        self.dispatcher.batch_capacity = capacity

    def _watch_pool(self, loop: asyncio.AbstractEventLoop) -> None:
        custom = k8s.CustomObjectsApi(self.kube.api_client)

        def events() -> Iterator[tuple[str, Json]]:
            stream = k8s_watch.Watch().stream(  # type: ignore[no-untyped-call]
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.config.namespace,
                PLURAL,
                field_selector=f"metadata.name={self.config.pool}",
                timeout_seconds=WATCH_TIMEOUT_S,
            )
            for event in stream:
                yield event["type"], dict(event["object"])

        def apply(kind: str, pool: Json) -> None:
            if kind != "DELETED":
                loop.call_soon_threadsafe(self._apply_pool, targets_of(pool), capacity_of(pool))

        self._forever("pool", events, apply)

    def _forever(
        self,
        what: str,
        events: Callable[[], Iterator[tuple[str, Json]]],
        handle: Callable[[str, Json], None],
    ) -> None:
        """Run a watch until stopped; a failure pauses, then relists (the snapshot is kept)."""
        while not self.stopped.is_set():
            try:
                for kind, obj in events():
                    if self.stopped.is_set():
                        return
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        handle(kind, obj)
            except Exception as exc:  # a watch must outlive any API or network failure
                log.warning("watch of the pool's %s failed (%s); retrying", what, exc)
                self.stopped.wait(RETRY_PAUSE_S)


async def watch_pool(config: GatewayConfig, dispatcher: Dispatcher) -> None:
    """Watch the pool for as long as the gateway runs.

    A client that cannot be built (no service account token yet, an unreadable kubeconfig) is
    retried: the gateway keeps serving what it knows, and an empty pool queues or refuses.
    """
    while True:
        try:
            kube = KubeClient.from_environment(config.kubeconfig or None)
        except Exception as exc:  # any configuration error: say it, wait, try again
            log.error("cannot reach the Kubernetes API (%s); retrying", exc)
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        try:
            await PoolWatcher(config, dispatcher, kube).run()
        finally:
            kube.close()
