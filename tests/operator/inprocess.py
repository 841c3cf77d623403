"""One pool ticked in this process against the dev cluster's API server (kmock).

For the tests that inject faults the operator process cannot be asked for: API answers chosen
per request (kmock reactions), an exception inside a tick, a status write lost to a crash. The
ticks run the operator's own code (`handlers.tick_once`, or the tick's steps one by one); every
read and write goes through the API server, and assertions read its state back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chiron_operator.devcluster.cluster.apiserver import ApiServerHandle
from chiron_operator.kube import KubeClient
from chiron_operator.operator.context import OperatorContext, PoolRef
from chiron_operator.operator.failures import FailureLog
from chiron_operator.operator.handlers import pool_ref, tick_once
from tests.operator.harness import EVENTS, MERGE, POOLS, pool_spec

Json = dict[str, Any]
NAMESPACE = "llm"
# Nothing listens there: the fetch fails at once, and the roles hold on MetricsMissing (only a
# raised minReplicas moves them), which is all these tests need from metrics.
NO_PROMETHEUS = "http://127.0.0.1:9"


@dataclass
class InProcessPool:
    """A pool on the API server, ticked here; `now_s` is the operator's clock."""

    kube: KubeClient
    server: ApiServerHandle
    name: str
    now_s: float = 1_000_000.0
    ctx: OperatorContext = field(init=False)
    failures: FailureLog = field(init=False)

    def __post_init__(self) -> None:
        self.ctx = OperatorContext(self.kube, clock=lambda: self.now_s)
        self.failures = FailureLog(f"{NAMESPACE}/{self.name}")

    def answer(self, request: str, payload: object, *, times: int = 1) -> None:
        """Answer the next `times` requests matching `request` ("patch /apis/...") with
        `payload` (a status code, a JSON body), after the emulator has applied them: a
        kmock view counts every request it matched so far, hence the offset."""
        view = self.server.emulator[request]
        seen = len(list(view))
        view[seen : seen + times] << payload

    async def create(self, spec: Mapping[str, Any]) -> None:
        await self.call("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
        body = {"metadata": {"name": self.name, "namespace": NAMESPACE}, "spec": dict(spec)}
        await self.call("POST", POOLS, params={"namespace": NAMESPACE}, body=body)

    async def call(self, method: str, path: str, **kwargs: Any) -> Json:
        return await asyncio.to_thread(self.kube.request, method, path, **kwargs)

    async def body(self) -> Json:
        params = {"namespace": NAMESPACE, "name": self.name}
        return await self.call("GET", POOLS + "/{name}", params=params)

    async def ref(self) -> PoolRef:
        return pool_ref(await self.body())

    async def tick(self, seconds: float = 1.0) -> None:
        """One tick of the operator's daemon, as kopf would run it with the live body."""
        self.now_s += seconds
        await tick_once(self.ctx, await self.ref(), await self.body(), self.failures)

    async def patch_spec(self, patch: Mapping[str, Any]) -> None:
        params = {"namespace": NAMESPACE, "name": self.name}
        await self.call(
            "PATCH", POOLS + "/{name}", params=params, body={"spec": patch}, content_type=MERGE
        )

    async def condition(self, kind: str) -> Json:
        conditions = ((await self.body()).get("status") or {}).get("conditions") or []
        found: Json = next(c for c in conditions if c["type"] == kind)
        return found

    async def decisions(self) -> list[Json]:
        return list(((await self.body()).get("status") or {}).get("decisions") or [])

    async def events(self, reason: str) -> list[Json]:
        found = await self.call("GET", EVENTS, params={"namespace": NAMESPACE})
        return [
            e
            for e in found["items"]
            if e["involvedObject"]["name"] == self.name and e.get("reason") == reason
        ]

    async def deployment(self, role: str) -> Json:
        found = await asyncio.to_thread(self.kube.get_deployment, NAMESPACE, f"{self.name}-{role}")
        assert found is not None
        return found


def small_spec(**override: Any) -> Json:
    """An Enforce pool without a gateway: one interactive and one mixed replica to start."""
    return pool_spec(NO_PROMETHEUS, gateway={"enabled": False}, **override)
