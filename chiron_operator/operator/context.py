"""What every handler of one operator process shares: clients, telemetry, the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chiron_operator.kube import KubeClient
from chiron_operator.metrics import PrometheusSource
from chiron_operator.operator.telemetry import OperatorMetrics


@dataclass(frozen=True, slots=True)
class PoolRef:
    """One pool's identity."""

    namespace: str
    name: str
    uid: str


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
    sources: dict[tuple[str, str], tuple[str, PrometheusSource]] = field(default_factory=dict)

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
        cached = self.sources.pop((ref.namespace, ref.name), None)
        if cached is not None:
            cached[1].close()
        self.telemetry.forget_pool(ref.namespace, ref.name)
