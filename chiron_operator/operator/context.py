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
from chiron_operator.metrics.destination import DestinationPolicy, token_url_allowed
from chiron_operator.metrics.source import DEFAULT_DEADLINE_S
from chiron_operator.operator.fetching import FetchLimiter
from chiron_operator.operator.metrics_log import FetchErrors
from chiron_operator.operator.pod_policy import DEFAULT_POD_POLICY, PodPolicy
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


# Loopback, link-local and unspecified addresses refused; nothing allowed beyond.
STRICT_DESTINATIONS: Final = DestinationPolicy()


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    """What the cluster admin allows the pools' Prometheus fetches (the operator's flags).

    `token` is the operator's own bearer token; it is sent only to `token_urls`
    (`--prometheus-token-url`), whatever URL a pool names. `destinations` refuses loopback,
    link-local and API-server addresses unless allowed (`--prometheus-allow-cidr`).
    `allow_pool_promql` lets pools' raw `spec.batchQueue.queuedRequestsQuery` run.
    `deadline_s` bounds each pool's whole fetch.
    """

    token: str | None = None
    token_urls: tuple[str, ...] = ()
    destinations: DestinationPolicy = STRICT_DESTINATIONS
    allow_pool_promql: bool = False
    deadline_s: float = DEFAULT_DEADLINE_S

    def token_for(self, url: str) -> str | None:
        """The operator's token when `url` is allowed to receive it, else None."""
        return self.token if token_url_allowed(url, self.token_urls) else None


DEFAULT_PROMETHEUS: Final = PrometheusSettings()


@dataclass
class OperatorContext:
    """One operator process's shared parts; one per process, never a module global.

    `clock` is the only clock the operator reads (unix seconds): tests may replace it, and the
    controllers only ever see its value through `snapshot.now_s`.
    """

    kube: KubeClient
    telemetry: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], float] = time.time
    prometheus: PrometheusSettings = DEFAULT_PROMETHEUS
    fetches: FetchLimiter = field(default_factory=FetchLimiter)
    verify_tls: bool = True
    gateway: GatewaySettings = DEFAULT_GATEWAY
    # What pools may run (images, ServiceAccounts) and the vLLM pods' security context.
    pod_policy: PodPolicy = DEFAULT_POD_POLICY
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
        source = PrometheusSource(
            url,
            bearer_token=token,
            verify_tls=self.verify_tls,
            deadline_s=self.prometheus.deadline_s,
            destinations=self.prometheus.destinations,
        )
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
