"""What the operator reads of a gateway through a real Prometheus: each pod's interactive load
and cap, summed over the gateway's replicas, in the same query as the running gauge."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Final
from urllib.parse import urlparse

import pytest

from chiron_operator.core.enums import Role
from chiron_operator.gateway.config import PodInfo, Share
from chiron_operator.metrics import (
    PodFacts,
    PoolMetrics,
    PoolQuery,
    PoolSelector,
    PrometheusSource,
    RoleFacts,
    build_snapshot,
)
from tests.gateway.gatekit import PodSpec, gateway, pods, send
from tests.support.prometheus import PrometheusFactory, ScrapeTarget, static_job

pytestmark = pytest.mark.timeout(90)

NS: Final = "llm"
POOL: Final = "llama"
NAMES: Final = {
    Role.INTERACTIVE: "llama-interactive-6d4f9-abcde",
    Role.MIXED: "llama-mixed-6d4f9-fghij",
}


def _address(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.hostname}:{parsed.port}"


async def _fetch_until(source: PrometheusSource, query: PoolQuery, ready: object) -> PoolMetrics:
    deadline = time.monotonic() + 15.0
    while True:
        metrics = await asyncio.to_thread(source.fetch, query)
        if ready(metrics) or time.monotonic() > deadline:  # type: ignore[operator]
            return metrics
        await asyncio.sleep(0.5)


async def test_per_class_load_and_caps_reach_the_operator(
    prometheus_factory: PrometheusFactory,
) -> None:
    specs = (PodSpec(Role.INTERACTIVE, 2), PodSpec(Role.MIXED, 4))
    async with AsyncExitStack() as stack:
        p = await stack.enter_async_context(pods(*specs))
        infos = [PodInfo(NAMES[i.role], i.role, i.url, i.max_num_seqs) for i in p.infos]
        gateways = [
            await stack.enter_async_context(gateway(infos, share=Share(2, index)))
            for index in (0, 1)
        ]
        for gw in gateways:
            gw.gateway.dispatcher.set_targets({Role.MIXED: 2})
        pod_targets = [
            ScrapeTarget(_address(i.url), {"namespace": NS, "pod": i.name}) for i in infos
        ]
        gateway_targets = [
            ScrapeTarget(_address(gw.url), {"namespace": NS, "pod": f"{POOL}-gateway-77-{n}"})
            for n, gw in enumerate(gateways)
        ]
        prom = prometheus_factory(
            [static_job("vllm", pod_targets), static_job("gateway", gateway_targets)]
        )
        await asyncio.to_thread(prom.wait_for_first_scrape)
        # Two interactive streams on the interactive pod (one per gateway, a share of 1 each),
        # one that overflows to the mixed pod, and one batch request beside it.
        load = [send(gw, max_tokens=1000, stream=True) for gw in (*gateways, gateways[0])]
        load.append(send(gateways[1], max_tokens=1000, batch=True))
        calls = [asyncio.create_task(c) for c in load]
        source = PrometheusSource(prom.url)
        query = PoolQuery(PoolSelector(NS, POOL), 4.0, 0.95, 4.0, gateway=True)
        mixed = NAMES[Role.MIXED]

        def settled(m: PoolMetrics) -> bool:
            # The two exporters are scraped independently: wait until both show the load.
            found, other = m.pods.get(mixed), m.pods.get(NAMES[Role.INTERACTIVE])
            return (
                found is not None
                and other is not None
                and found.interactive_running_requests == 1.0
                and found.running_requests == 2.0
                and other.interactive_running_requests == 2.0
            )

        metrics = await _fetch_until(source, query, settled)
        for call in calls:
            call.cancel()
        assert metrics.error == "" and metrics.queries == 7
        interactive = metrics.pods[NAMES[Role.INTERACTIVE]]
        assert (interactive.interactive_running_requests, interactive.gateway_cap_seqs) == (2, 2)
        assert (metrics.pods[mixed].interactive_running_requests,) == (1.0,)
        assert metrics.pods[mixed].gateway_cap_seqs == 2.0  # min(4, target 2), both shares
        assert metrics.pods[mixed].running_requests == 2.0  # vLLM's own gauge: both classes
        snapshot = build_snapshot(
            time.time(),
            roles={
                Role.INTERACTIVE: RoleFacts(1, 1, 0, 2),
                Role.MIXED: RoleFacts(1, 1, 0, 4),
                Role.BATCH: RoleFacts(0, 0, 0, 256),
            },
            pods=[
                PodFacts(NAMES[Role.INTERACTIVE], Role.INTERACTIVE, True, 2),
                PodFacts(mixed, Role.MIXED, True, 4),
            ],
            metrics=metrics,
            staleness_s=30.0,
            batch_deadline_s=3600.0,
        )
        (pod,) = snapshot.role(Role.MIXED).pods
        assert (pod.max_num_seqs, pod.interactive_running_requests) == (2, 1.0)
