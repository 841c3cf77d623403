"""Two dev clusters the operator's integration tests share, each with the real operator.

- `plane`: the API server, an empty Prometheus and the operator (a process, kopf peering in
  namespace `llm`, as the chart's namespaced scope runs it). No pods run: the tests about
  objects, conflicts, invalid specs and modes need none, and the decisions they provoke (a
  raised minReplicas) do not depend on load.
- `live`: the same plus the kubelet stand-in running every pool's pods as real
  `chiron-emulator` processes and a Prometheus discovering them through file_sd, scraping every
  second. Pools tick every second.

Each test creates its own pools (names unique in the package) and deletes them at the end, so
tests do not see each other's objects. Every process started here is stopped in a finally.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chiron_operator.devcluster.cluster.operator_process import OperatorOptions
from chiron_operator.devcluster.cluster.prometheus import PrometheusProcess
from chiron_operator.devcluster.cluster.stack import DevStack, StackOptions
from tests.operator.harness import OperatorSlot, Pools

NAMESPACE = "llm"
PEERING = "chiron-operator"
OPERATOR = "operator"


@dataclass
class Env:
    """A running dev cluster with its operator."""

    stack: DevStack
    operator: OperatorSlot
    pools: Pools
    workdir: Path
    started_s: float

    @property
    def prometheus(self) -> PrometheusProcess:
        assert self.stack.prometheus is not None
        return self.stack.prometheus


def _env(workdir: Path, *, pods: bool) -> Iterator[Env]:
    started = time.time()
    options = StackOptions(
        workdir=workdir, namespaces=(NAMESPACE,), pods=pods, pods_namespace=NAMESPACE
    )
    with DevStack(options) as stack:
        stack.create_peering(PEERING, NAMESPACE)
        operator = OperatorSlot(
            OperatorOptions(stack.kubeconfig(OPERATOR), namespaces=(NAMESPACE,), peering=PEERING),
            workdir,
        )
        try:
            yield Env(stack, operator, Pools(stack.client(), NAMESPACE), workdir, started)
        finally:
            operator.stop()


@pytest.fixture(scope="package")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from _env(tmp_path_factory.mktemp("plane"), pods=False)


@pytest.fixture(scope="package")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from _env(tmp_path_factory.mktemp("live"), pods=True)
