"""The real gateway on the dev cluster: deployed by the operator, finding its pods and targets
through the API, in front of emulator pods that behave like vLLM 0.32 at the cap.

Every check reads the emulators' own gauges (what each pod really runs), the gateway's
/metrics, the API server's objects and its audit log, never the gateway's word alone.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest

from chiron_operator.devcluster.cluster.pods import PORT_ANNOTATION
from chiron_operator.devcluster.cluster.runtimes import gateway_identity
from chiron_operator.devcluster.demo.traffic import gateway_endpoint
from tests.chart.rbac import rendered_grants
from tests.chart.support import parse, render
from tests.emulator.emukit import fast_value, sample_value
from tests.gateway.gatekit import until
from tests.operator.conftest import NAMESPACE, Env
from tests.operator.harness import MODEL, Json, fixed, pool_spec, wait_for
from tests.operator.rbac_check import denied

pytestmark = pytest.mark.timeout(180)

T = TypeVar("T")
SECRETS = "/api/v1/namespaces/{namespace}/secrets"
OFF = {"minReplicas": 0, "maxReplicas": 0}


@dataclass
class Running:
    """A pool whose pods and gateway are up: their loopback ports."""

    pool: str
    pods: dict[str, int]  # vLLM pod name -> port
    roles: dict[str, str]  # vLLM pod name -> role
    gateways: list[int]


def _ready(pod: Json) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return not pod["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def start(env: Env, pool: str, spec: Json, *, vllm_pods: int, gateways: int = 1) -> Running:
    """Create the pool; wait until its pods and gateways are ready and the gateways see them."""
    env.pools.create(pool, spec)

    def up() -> Running | None:
        pods = [p for p in env.pools.pods(pool) if _ready(p)]
        vllm = {
            p["metadata"]["name"]: p for p in pods if "chiron.io/role" in p["metadata"]["labels"]
        }
        gw = [
            int(p["metadata"]["annotations"][PORT_ANNOTATION])
            for p in pods
            if p["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"
        ]
        if len(vllm) < vllm_pods or len(gw) < gateways or gateway_endpoint(pods) is None:
            return None
        found = Running(
            pool,
            {n: int(p["metadata"]["annotations"][PORT_ANNOTATION]) for n, p in vllm.items()},
            {n: p["metadata"]["labels"]["chiron.io/role"] for n, p in vllm.items()},
            sorted(gw),
        )
        return found if all(_sees(port, vllm_pods) for port in found.gateways) else None

    return wait_for(up, timeout_s=60, what=f"{pool}'s pods and gateway ready", interval_s=0.3)


def _sees(port: int, pods: int) -> bool:
    """The gateway knows `pods` ready vLLM pods (its /health)."""
    try:
        body = asyncio.run(_get_json(f"http://127.0.0.1:{port}/health"))
    except (aiohttp.ClientError, OSError):
        return False
    return sum(body["readyPods"].values()) >= pods


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return await answer.json()


async def _text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as answer:
        return await answer.text()


@dataclass
class Answer:
    status: int
    ttft_s: float
    body: bytes
    headers: dict[str, str]


async def send(
    session: aiohttp.ClientSession,
    port: int,
    *,
    max_tokens: int,
    stream: bool = True,
    batch: bool = False,
) -> Answer:
    headers = {"x-chiron-class": "batch"} if batch else {}
    body = {"model": MODEL, "prompt": "hello", "max_tokens": max_tokens, "stream": stream}
    sent = time.monotonic()
    first: float | None = None
    chunks = []
    url = f"http://127.0.0.1:{port}/v1/completions"
    async with session.post(url, json=body, headers=headers) as answer:
        async for chunk in answer.content.iter_any():
            first = first if first is not None else time.monotonic()
            chunks.append(chunk)
        return Answer(
            answer.status,
            (first or time.monotonic()) - sent,
            b"".join(chunks),
            dict(answer.headers),
        )


async def running_of(session: aiohttp.ClientSession, run: Running) -> dict[str, float]:
    return {
        name: fast_value(
            await _text(session, f"http://127.0.0.1:{port}/metrics"), "vllm:num_requests_running"
        )
        for name, port in run.pods.items()
    }


async def watch_max(
    session: aiohttp.ClientSession, run: Running, stop: asyncio.Event
) -> dict[str, float]:
    most = dict.fromkeys(run.pods, 0.0)
    while not stop.is_set():
        for name, value in (await running_of(session, run)).items():
            most[name] = max(most[name], value)
        await asyncio.sleep(0.02)
    return most


def scenario(fn: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    async def run() -> T:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            return await fn(session)

    return asyncio.run(run())


def test_routes_by_class_overflows_to_mixed_and_keeps_every_pod_within_its_cap(
    live: Env,
) -> None:
    pool = "gw-route"
    spec = pool_spec(
        live.prometheus.url,
        roles={"interactive": fixed(1, 1, 2), "mixed": fixed(1, 1, 2), "batch": OFF},
    )
    run = start(live, pool, spec, vllm_pods=2)
    by_role = {role: name for name, role in run.roles.items()}
    try:

        async def go(session: aiohttp.ClientSession) -> None:
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_max(session, run, stop))
            port = run.gateways[0]
            first = [asyncio.create_task(send(session, port, max_tokens=150)) for _ in range(3)]

            async def spread() -> bool:
                now = await running_of(session, run)
                return (now[by_role["interactive"]], now[by_role["mixed"]]) == (2.0, 1.0)

            await until(spread, "two on the interactive pod, one overflowed to mixed")
            more = [asyncio.create_task(send(session, port, max_tokens=20)) for _ in range(3)]
            answers = await asyncio.gather(*first, *more)
            stop.set()
            assert {a.status for a in answers} == {200}
            assert all(v <= 2.0 for v in (await watcher).values())
            text = await _text(session, f"http://127.0.0.1:{port}/metrics")
            routed = sample_value(
                text,
                "chiron_gateway_requests_total",
                **{"class": "interactive", "outcome": "routed"},
            )
            assert routed >= 2

        scenario(go)
    finally:
        live.pools.delete(pool, timeout_s=40)


def test_a_new_target_batch_size_applies_through_the_gateway_without_a_restart(
    live: Env,
) -> None:
    """An ITL SLO no pod can meet, with the pod full: the local controller halves the target;
    the gateway caps the pod at it at once, and the Deployment's --max-num-seqs never moves."""
    pool = "gw-target"
    interactive = {
        "minReplicas": 1,
        "maxReplicas": 1,
        "minBatchSizeSeqs": 1,
        "maxBatchSizeSeqs": 8,
        "initialBatchSizeSeqs": 8,
    }
    spec = pool_spec(
        live.prometheus.url,
        slo={"interactiveTtftS": 2.0, "interactiveItlS": 0.0005},
        roles={"interactive": interactive, "mixed": OFF, "batch": OFF},
    )
    run = start(live, pool, spec, vllm_pods=1)
    (name,) = run.pods
    try:

        async def go(session: aiohttp.ClientSession) -> dict[str, Any]:
            # More in flight than half the cap: a decrease binds only on a pod that runs more
            # than the smaller size (`control.backpressure.shrink`).
            load = [
                asyncio.create_task(send(session, run.gateways[0], max_tokens=2000))
                for _ in range(8)
            ]

            def lowered() -> Json | None:
                role = (live.pools.status(pool).get("roles") or {}).get("interactive") or {}
                return role if (role.get("targetBatchSizeSeqs") or 8) < 8 else None

            role = await asyncio.to_thread(
                wait_for, lowered, timeout_s=40, what="a lower target in status"
            )
            target = int(role["targetBatchSizeSeqs"])

            def capped() -> float | None:
                text = asyncio.run(_get_text(f"http://127.0.0.1:{run.gateways[0]}/metrics"))
                cap = sample_value(text, "chiron_gateway_pod_cap_seqs", target_pod=name)
                return cap if cap < 8 else None

            cap = await asyncio.to_thread(wait_for, capped, timeout_s=5, what="the gateway's cap")
            for task in load:
                task.cancel()
            await asyncio.gather(*load, return_exceptions=True)
            return {"target": target, "cap": cap}

        seen = scenario(go)
        assert seen["cap"] <= 4
        deployment = live.pools.deployment(pool, "interactive")
        assert deployment is not None
        template = deployment["spec"]["template"]["metadata"]["annotations"]
        assert template["chiron.io/max-num-seqs"] == "8"  # the ceiling never moved
        pods = [p for p in live.pools.pods(pool) if "chiron.io/role" in p["metadata"]["labels"]]
        assert [p["metadata"]["name"] for p in pods] == [name]  # no new pod
        restarts = pods[0]["status"]["containerStatuses"][0]["restartCount"]
        assert restarts == 0
    finally:
        live.pools.delete(pool, timeout_s=40)


async def _get_text(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        return await _text(session, url)


def test_interactive_cuts_off_batch_work_on_a_full_mixed_pod(live: Env) -> None:
    pool = "gw-yield"
    spec = pool_spec(
        live.prometheus.url,
        roles={"interactive": OFF, "mixed": fixed(1, 1, 2), "batch": OFF},
    )
    run = start(live, pool, spec, vllm_pods=1)
    (port,) = run.pods.values()
    try:

        async def go(session: aiohttp.ClientSession) -> None:
            gw = run.gateways[0]
            batch = [
                asyncio.create_task(send(session, gw, max_tokens=300, stream=False, batch=True))
                for _ in range(2)
            ]

            async def full() -> bool:
                return list((await running_of(session, run)).values()) == [2.0]

            await until(full, "two batch requests running on the mixed pod")
            interactive = await send(session, gw, max_tokens=5)
            assert interactive.status == 200
            assert interactive.ttft_s < 1.0, interactive.ttft_s  # the TTFT SLO is 2 s
            finished = await asyncio.gather(*batch)
            assert [a.status for a in finished] == [200, 200]
            tokens = [json.loads(a.body)["usage"]["completion_tokens"] for a in finished]
            assert tokens == [300, 300]
            engine = await _text(session, f"http://127.0.0.1:{port}/metrics")
            assert fast_value(engine, "vllm:num_preemptions_total") == 0.0
            text = await _text(session, f"http://127.0.0.1:{gw}/metrics")
            assert fast_value(text, "chiron_gateway_batch_preemptions_total") == 1.0

        scenario(go)
    finally:
        live.pools.delete(pool, timeout_s=40)


def test_a_batch_request_whose_pod_is_deleted_mid_request_still_completes(live: Env) -> None:
    pool = "gw-loss"
    spec = pool_spec(
        live.prometheus.url,
        roles={"interactive": fixed(1, 1, 2), "mixed": OFF, "batch": fixed(2, 2, 2)},
    )
    run = start(live, pool, spec, vllm_pods=3)
    batch_pods = [n for n, role in run.roles.items() if role == "batch"]
    try:

        async def go(session: aiohttp.ClientSession) -> list[Answer]:
            gw = run.gateways[0]
            calls = [
                asyncio.create_task(send(session, gw, max_tokens=600, stream=False, batch=True))
                for _ in range(2)
            ]

            async def both_running() -> bool:
                return sum((await running_of(session, run)).values()) == 2.0

            await until(both_running, "both batch requests running")
            busy = await running_of(session, run)
            victim = next(n for n in batch_pods if busy[n] >= 1.0)
            await asyncio.to_thread(
                live.pools.kube.request,
                "DELETE",
                "/api/v1/namespaces/{namespace}/pods/{name}",
                params={"namespace": NAMESPACE, "name": victim},
            )
            return list(await asyncio.gather(*calls))

        answers = scenario(go)
        assert [a.status for a in answers] == [200, 200]
        assert all(json.loads(a.body)["usage"]["completion_tokens"] == 600 for a in answers)
    finally:
        live.pools.delete(pool, timeout_s=60)


def test_a_full_pool_refuses_with_429_and_says_why(live: Env) -> None:
    pool = "gw-refuse"
    spec = pool_spec(
        live.prometheus.url,
        roles={"interactive": fixed(1, 1, 1), "mixed": OFF, "batch": OFF},
        gateway={"maxQueuedRequests": 0},
    )
    run = start(live, pool, spec, vllm_pods=1)
    try:

        async def go(session: aiohttp.ClientSession) -> Answer:
            busy = asyncio.create_task(send(session, run.gateways[0], max_tokens=200))

            async def taken() -> bool:
                return sum((await running_of(session, run)).values()) == 1.0

            await until(taken, "the pod's one slot taken")
            refused = await send(session, run.gateways[0], max_tokens=5)
            busy.cancel()
            await asyncio.gather(busy, return_exceptions=True)
            return refused

        refused = scenario(go)
        assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "batch size" in json.loads(refused.body)["error"]["message"]
    finally:
        live.pools.delete(pool, timeout_s=40)


def _store_secret(live: Env, name: str, url: str) -> dict[str, Any]:
    """A Secret holding a gateway store's URL; the PostgreSQL store it names."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {"url": base64.b64encode(url.encode()).decode()},
    }
    live.pools.kube.create_in(SECRETS, body)
    return {"type": "PostgreSQL", "postgresql": {"urlSecretRef": {"name": name}}}


def test_two_gateway_replicas_share_each_pods_cap(live: Env) -> None:
    pool = "gw-share"
    # Two replicas need a shared store; this test is about the caps, so its URL is `none` (no
    # Batch API), which chiron-gateway accepts as a store URL.
    store = _store_secret(live, f"{pool}-store", "none")
    spec = pool_spec(
        live.prometheus.url,
        roles={"interactive": fixed(1, 1, 3), "mixed": OFF, "batch": OFF},
        gateway={"replicas": 2, "store": store},
    )
    run = start(live, pool, spec, vllm_pods=1, gateways=2)
    (name,) = run.pods
    try:

        async def go(session: aiohttp.ClientSession) -> tuple[dict[str, float], list[float]]:
            def shares() -> list[float] | None:
                found = [
                    sample_value(
                        asyncio.run(_get_text(f"http://127.0.0.1:{gw}/metrics")),
                        "chiron_gateway_pod_cap_seqs",
                        target_pod=name,
                    )
                    for gw in run.gateways
                ]
                return found if sorted(found) == [1.0, 2.0] else None

            caps = await asyncio.to_thread(wait_for, shares, timeout_s=20, what="shared caps")
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_max(session, run, stop))
            calls = [send(session, gw, max_tokens=60) for gw in run.gateways * 4]
            answers = await asyncio.gather(*calls)
            stop.set()
            assert {a.status for a in answers} == {200}
            return await watcher, caps

        most, caps = scenario(go)
        assert most[name] <= 3.0 and sum(caps) == 3.0
    finally:
        live.pools.delete(pool, timeout_s=40)
        live.pools.kube.delete_named(SECRETS, NAMESPACE, f"{pool}-store")


def test_the_gateways_api_calls_are_what_the_chart_grants_it(live: Env) -> None:
    """Every call a gateway of this package made is allowed by the chart's gateway ClusterRole,
    bound in the pool's namespace as the operator binds it."""
    objects = parse(render({}))
    role = next(
        o
        for o in objects
        if o["kind"] == "ClusterRole" and o["metadata"]["name"].endswith("-gateway")
    )
    calls = [r for r in live.stack.audit.records if r.identity.startswith("system:serviceaccount:")]
    pools = {r.identity.rsplit(":", 1)[1].removesuffix("-gateway") for r in calls}
    assert calls and pools, "no gateway made an API call"
    for pool in pools:
        subject = (NAMESPACE, f"{pool}-gateway")
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{pool}-gateway", "namespace": NAMESPACE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role["metadata"]["name"],
            },
            "subjects": [{"kind": "ServiceAccount", "name": subject[1], "namespace": NAMESPACE}],
        }
        grants = rendered_grants([role, binding], subject)
        mine = [r for r in calls if r.identity == gateway_identity(NAMESPACE, pool)]
        assert denied(mine, grants) == []
