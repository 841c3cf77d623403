"""What every handler of one operator process shares: clients, telemetry, the clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from chiron_operator import __version__
from chiron_operator.kube import KubeClient
from chiron_operator.metrics import PrometheusSource
from chiron_operator.operator.metrics_log import FetchErrors
from chiron_operator.operator.telemetry import OperatorMetrics


@dataclass(frozen=True, slots=True)
class PoolRef:
    """One pool's identity."""

    namespace: str
    name: str
    uid: str


# The image the chart installs the operator from: it ships `chiron-gateway` too, so an operator
# told nothing else runs its pools' gateways from the same release.
DEFAULT_GATEWAY_IMAGE: Final = f"ghcr.io/chiron-operator/chiron-operator:{__version__}"
DEFAULT_GATEWAY_CLUSTER_ROLE: Final = "chiron-gateway"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """How the operator runs the pools' gateways (`--gateway-image`, `--gateway-cluster-role`).

    `image` runs `chiron-gateway` for every pool whose spec.gateway.image is unset; the chart
    sets it to the operator's own image. `cluster_role` is the ClusterRole each pool's
    `<pool>-gateway` RoleBinding grants the gateway in the pool's namespace (the chart creates
    it and lets the operator `bind` exactly that one).
    """

    image: str = DEFAULT_GATEWAY_IMAGE
    cluster_role: str = DEFAULT_GATEWAY_CLUSTER_ROLE


DEFAULT_GATEWAY: Final = GatewaySettings()


@dataclass
class OperatorContext:
    """One operator process's shared parts; one per process, never a module global.

    `clock` is the only clock the operator reads (unix seconds): tests may replace it, and the
    controllers only ever see its value through `snapshot.now_s`.
    """

    kube: KubeClient
    telemetry: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], float] = time.time
    prometheus_token: str | None = None
    verify_tls: bool = True
    gateway: GatewaySettings = DEFAULT_GATEWAY
    sources: dict[tuple[str, str], tuple[str, PrometheusSource]] = field(default_factory=dict)
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # Each pool's last fetch errors, so a failing query is logged when it changes, not per tick.
    fetch_errors: dict[tuple[str, str], FetchErrors] = field(default_factory=dict)

    def lock_for(self, ref: PoolRef) -> asyncio.Lock:
        """Serialises what writes a pool's objects: the spec handlers and the pool's ticks.

        kopf runs a new pool's create handler and its daemon's first tick at once; both find
        a role Deployment missing and both create it, and the loser's fallback could write a
        stale replica count over the winner's first decision.
        """
        return self.locks.setdefault((ref.namespace, ref.name), asyncio.Lock())

    def source_for(self, ref: PoolRef, url: str, token: str | None) -> PrometheusSource:
        """The pool's Prometheus client, rebuilt when its URL or token changes.

        One per pool: a source holds one HTTP session, which is not safe to share between the
        threads that ticks of different pools run in.
        """
        key = (ref.namespace, ref.name)
        fingerprint = f"{url}|{token or ''}"
        cached = self.sources.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        if cached is not None:
            cached[1].close()
        source = PrometheusSource(url, bearer_token=token, verify_tls=self.verify_tls)
        self.sources[key] = (fingerprint, source)
        return source

    def forget(self, ref: PoolRef) -> None:
        """Release what a deleted pool held."""
        self.locks.pop((ref.namespace, ref.name), None)
        self.fetch_errors.pop((ref.namespace, ref.name), None)
        cached = self.sources.pop((ref.namespace, ref.name), None)
        if cached is not None:
            cached[1].close()
        self.telemetry.forget_pool(ref.namespace, ref.name)
