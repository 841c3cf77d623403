"""Every pool's Prometheus fetch, run so that no pool can starve another.

A fetch blocks a thread for as long as the pool's Prometheus takes, and that server is the
pool's choice. Fetches therefore run on their own executor, not the default one the Kubernetes
calls share, and each is bounded three ways: its source cuts it at its deadline
(`metrics.transport.Watchdog`); a pool has at most one fetch in flight (a thread that outlives
its deadline, stuck resolving a host name, keeps the pool from starting another); a namespace
has at most `per_namespace` in flight, so one tenant's hung servers hold a bounded share of
the workers.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from chiron_operator.metrics import PoolMetrics

DEFAULT_FETCH_WORKERS: Final = 64
DEFAULT_FETCHES_PER_NAMESPACE: Final = 16
# How long past the source's own deadline the tick waits for its thread before giving up.
GRACE_S: Final = 2.0


class FetchLimiter:
    """The fetch executor and its per-pool and per-namespace bounds (one per operator)."""

    def __init__(
        self,
        workers: int = DEFAULT_FETCH_WORKERS,
        per_namespace: int = DEFAULT_FETCHES_PER_NAMESPACE,
    ) -> None:
        self.per_namespace = per_namespace
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prometheus")
        self._pools: set[tuple[str, str]] = set()
        self._namespaces: Counter[str] = Counter()

    def _busy(self, namespace: str, pool: str) -> str:
        if (namespace, pool) in self._pools:
            return "the pool's previous Prometheus fetch is still running: skipped"
        if self._namespaces[namespace] >= self.per_namespace:
            return (
                f"{self.per_namespace} Prometheus fetches of namespace {namespace} are in "
                "flight already: skipped"
            )
        return ""

    def _release(self, namespace: str, pool: str) -> None:
        self._pools.discard((namespace, pool))
        self._namespaces[namespace] -= 1
        if self._namespaces[namespace] <= 0:
            del self._namespaces[namespace]

    async def run(
        self,
        namespace: str,
        pool: str,
        fetch: Callable[[], PoolMetrics],
        *,
        deadline_s: float,
        now_s: float,
    ) -> PoolMetrics:
        """The pool's fetch, or an error saying why it did not run or did not end in time."""
        busy = self._busy(namespace, pool)
        if busy:
            return PoolMetrics(error=busy, fetched_at_s=now_s)
        self._pools.add((namespace, pool))
        self._namespaces[namespace] += 1
        future = asyncio.get_running_loop().run_in_executor(self._executor, fetch)
        # Released when the thread ends, not when the tick stops waiting for it.
        future.add_done_callback(lambda _: self._release(namespace, pool))
        try:
            return await asyncio.wait_for(asyncio.shield(future), deadline_s + GRACE_S)
        except TimeoutError:
            return PoolMetrics(
                error=f"the Prometheus fetch did not end within its {deadline_s:g} s deadline",
                fetched_at_s=now_s,
            )

    def close(self) -> None:
        """Stop taking fetches; a thread still blocked is left to end on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
