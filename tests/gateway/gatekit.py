"""Test support: emulator pods and a real gateway in this event loop, on loopback ports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from chiron_operator.core.enums import Role
from chiron_operator.gateway.config import GatewayConfig, PodInfo, Share
from chiron_operator.gateway.server import Gateway, build_app, build_gateway
from chiron_operator.routing import RoutingTuning
from tests.emulator.emukit import Running, fast_value, running

MODEL = "tiny"


@dataclass(frozen=True)
class PodSpec:
    """An emulator pod to start: its role and its --max-num-seqs."""

    role: Role
    seqs: int
    flags: tuple[str, ...] = ()


@dataclass
class Pods:
    """Running emulator pods by name (`<role>-<index>`)."""

    running: dict[str, Running] = field(default_factory=dict)
    infos: list[PodInfo] = field(default_factory=list)

    async def gauge(self, name: str, family: str = "vllm:num_requests_running") -> float:
        return fast_value(await self.running[name].client.metrics(), family)

    async def sum_of(self, family: str) -> dict[str, float]:
        return {name: await self.gauge(name, family) for name in self.running}


@asynccontextmanager
async def pods(*specs: PodSpec) -> AsyncIterator[Pods]:
    """Start one emulator per spec (priority scheduling, as the operator runs them)."""
    found = Pods()
    async with AsyncExitStack() as stack:
        for i, spec in enumerate(specs):
            flags = ("--max-num-seqs", str(spec.seqs), "--scheduling-policy", "priority")
            pod = await stack.enter_async_context(running(*flags, *spec.flags))
            name = f"{spec.role.value}-{i}"
            found.running[name] = pod
            found.infos.append(PodInfo(name, spec.role, pod.server.url.rstrip("/"), spec.seqs))
        yield found


@dataclass
class RunningGateway:
    """A gateway serving on a loopback port."""

    gateway: Gateway
    url: str
    session: aiohttp.ClientSession

    async def metrics(self) -> str:
        async with self.session.get(self.url + "/metrics") as answer:
            return await answer.text()


@asynccontextmanager
async def gateway(
    endpoints: Sequence[PodInfo],
    tuning: RoutingTuning | None = None,
    share: Share | None = None,
    **config: object,
) -> AsyncIterator[RunningGateway]:
    """A real gateway (aiohttp app, handler cancellation) in front of `endpoints`."""
    built = build_gateway(
        GatewayConfig(
            endpoints=tuple(endpoints),
            routing=tuning or RoutingTuning(),
            share=share or Share(),
            pool="test",
            **config,  # type: ignore[arg-type]
        )
    )
    runner = web.AppRunner(build_app(built), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        yield RunningGateway(built, f"http://127.0.0.1:{port}", session)
    finally:
        await session.close()
        await runner.cleanup()


@dataclass
class Answer:
    """A request's answer as its client saw it."""

    status: int
    ttft_s: float
    total_s: float
    body: bytes
    headers: dict[str, str]


async def send(
    gw: RunningGateway,
    *,
    max_tokens: int = 8,
    batch: bool = False,
    stream: bool = False,
    path: str = "/v1/completions",
) -> Answer:
    """One request through the gateway, timed as a client times it."""
    headers = {"x-chiron-class": "batch"} if batch else {}
    body = {"model": MODEL, "prompt": "hello", "max_tokens": max_tokens, "stream": stream}
    sent = time.monotonic()
    first: float | None = None
    chunks: list[bytes] = []
    async with gw.session.post(gw.url + path, json=body, headers=headers) as answer:
        async for chunk in answer.content.iter_any():
            if first is None:
                first = time.monotonic()
            chunks.append(chunk)
        done = time.monotonic()
        return Answer(
            answer.status,
            (first or done) - sent,
            done - sent,
            b"".join(chunks),
            dict(answer.headers),
        )


async def watch_max(p: Pods, stop: asyncio.Event) -> dict[str, float]:
    """The most requests each pod ever ran at once while `stop` is unset (its own gauge)."""
    most = dict.fromkeys(p.running, 0.0)
    while not stop.is_set():
        for name, value in (await p.sum_of("vllm:num_requests_running")).items():
            most[name] = max(most[name], value)
        await asyncio.sleep(0.01)
    return most


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 5.0) -> None:
    """Poll `check` until it holds; fail saying `what` after `timeout_s` (a loaded machine
    admits requests later than an idle one, so the tests wait for states, not for time)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.02)
