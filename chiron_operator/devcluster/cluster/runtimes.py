"""What runs for each of the operator's pods on the dev cluster.

A pool has two kinds of pod: vLLM (every role) and its gateway. vLLM containers run as
`chiron-emulator` with the container's `vllm serve` arguments; the gateway container runs as
`chiron-gateway` with its own arguments, in Kubernetes mode against this cluster's API server
(a kubeconfig whose identity is the gateway's ServiceAccount, so the audit log can check its
calls against the chart's RBAC), with `POD_NAME` set as the downward API would set it. Every pod
shares 127.0.0.1, so the gateway reads each vLLM pod's private port from its annotation.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chiron_operator.devcluster.cluster.pods import PORT_ANNOTATION
from chiron_operator.devcluster.cluster.processes import ContainerRuntime, Launch, ProcessSpec
from chiron_operator.kube.labels import GATEWAY_COMPONENT, LABEL_COMPONENT, LABEL_POOL

GATEWAY: Final = (sys.executable, "-m", "chiron_operator.gateway")


def gateway_identity(namespace: str, pool: str) -> str:
    """The name the gateway's requests carry: its ServiceAccount, as Kubernetes names it."""
    return f"system:serviceaccount:{namespace}:{pool}-gateway"


@dataclass(frozen=True, slots=True)
class PoolRuntime:
    """vLLM containers as emulators; gateway containers as `chiron-gateway` on this cluster.

    `kubeconfig` writes a kubeconfig for an identity and returns its path.
    """

    vllm: ContainerRuntime
    kubeconfig: Callable[[str], Path]
    volumes: Path | None = None  # where a gateway's SQLite store volume lives on this machine

    def process(self, launch: Launch) -> ProcessSpec:
        if launch.labels.get(LABEL_COMPONENT) != GATEWAY_COMPONENT:
            return self.vllm.process(launch)
        identity = gateway_identity(launch.namespace, launch.labels.get(LABEL_POOL, ""))
        argv = (
            *GATEWAY,
            *launch.args,
            "--host",
            "127.0.0.1",
            "--kubeconfig",
            str(self.kubeconfig(identity)),
            "--pod-port-annotation",
            PORT_ANNOTATION,
            *self._local_store(launch),
        )
        env = {**os.environ, **launch.env, "POD_NAME": launch.pod}
        return ProcessSpec(argv=argv, env=env, cwd=self._workdir(launch))

    def _workdir(self, launch: Launch) -> str | None:
        """The pod's own directory: whatever the gateway writes relative to its working
        directory (a store URL it was not given) stays in this cluster, not in the caller's."""
        if self.volumes is None:
            return None
        directory = self.volumes / launch.namespace / "pods" / launch.pod
        directory.mkdir(parents=True, exist_ok=True)
        return str(directory)

    def _local_store(self, launch: Launch) -> tuple[str, ...]:
        """A SQLite store on the pod's volume becomes a file in this cluster's work directory,
        one per pool, so that a replacement gateway pod finds the batches its predecessor took
        (as the PersistentVolumeClaim gives them back in a cluster)."""
        args = launch.args
        given = [v for flag, v in itertools.pairwise(args) if flag == "--store"]
        given += [a.removeprefix("--store=") for a in args if a.startswith("--store=")]
        if self.volumes is None or not any(v.startswith("sqlite:") for v in given):
            return ()
        pool = launch.labels.get(LABEL_POOL, "")
        directory = self.volumes / launch.namespace / f"{pool}-gateway-store"
        directory.mkdir(parents=True, exist_ok=True)
        return ("--store", f"sqlite:///{directory}/batches.db")
