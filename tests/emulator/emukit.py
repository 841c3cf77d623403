"""Test support: an in-process emulator on a free loopback port and a small HTTP client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from chiron_operator.emulator.args import EmulatorConfig, parse_args
from chiron_operator.emulator.server import EmulatorServer

SAMPLE_DIR = Path(__file__).parents[1] / "data" / "vllm_metrics_sample"

# The families the operator reads (DESIGN.md section 2), by family name (counters lose _total).
OPERATOR_FAMILIES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:num_preemptions",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:request_success",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens",
)


def label_names(family: Metric) -> set[str]:
    """Label names of a family's samples, without a histogram's `le`."""
    return {k for s in family.samples for k in s.labels if k != "le"}


def buckets(family: Metric) -> list[float]:
    """A histogram family's bucket boundaries (empty for other types)."""
    return [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]


def config(*flags: str) -> EmulatorConfig:
    """An emulator config on 127.0.0.1 and a free port, model "tiny"."""
    return parse_args(["tiny", "--host", "127.0.0.1", "--port", "0", *flags])


def families(text: str) -> dict[str, Metric]:
    """Metric families of a classic text exposition, by family name."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of series `name` (exact sample name) whose labels include `labels`."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise KeyError(name)


def fast_value(text: str, name: str) -> float:
    """The first series named `name`, by regex (labels ignored): cheap enough to sample often."""
    match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
    if match is None:
        raise KeyError(name)
    return float(match.group(1))


@dataclass
class Timed:
    """A completion's client-side timings and its parsed SSE events or body."""

    sent: float
    done: float
    events: list[tuple[float, str]] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)
    status: int = 0

    @property
    def latency(self) -> float:
        """Seconds from send to the end of the response."""
        return self.done - self.sent


class Client:
    """Requests against one emulator."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def metrics(self) -> str:
        """One /metrics scrape."""
        async with self.session.get("/metrics") as resp:
            assert resp.status == 200
            return await resp.text()

    async def complete(self, path: str = "/v1/completions", **body: object) -> Timed:
        """A non-streaming request (prompt "hello" unless given)."""
        return await self.post(path, {"prompt": "hello", **body})

    async def post(self, path: str, body: dict[str, object]) -> Timed:
        """POST `body` as JSON; the response body is kept even for errors."""
        sent = time.monotonic()
        async with self.session.post(path, json=body) as resp:
            payload = await resp.json()
            return Timed(sent, time.monotonic(), body=payload, status=resp.status)

    async def stream(self, path: str = "/v1/completions", **body: object) -> Timed:
        """A streaming request: every SSE `data:` payload with its arrival time."""
        body.setdefault("prompt", "hello")
        body["stream"] = True
        sent = time.monotonic()
        timed = Timed(sent, sent)
        async with self.session.post(path, json=body) as resp:
            timed.status = resp.status
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    timed.events.append((time.monotonic(), line.removeprefix("data: ")))
        timed.done = time.monotonic()
        return timed


@dataclass
class Running:
    """An emulator started by `running`, with its client."""

    server: EmulatorServer
    client: Client


@asynccontextmanager
async def running(*flags: str) -> AsyncIterator[Running]:
    """Start an emulator in this event loop with `flags`; stop it on exit."""
    server = EmulatorServer(config(*flags))
    await server.start()
    connector = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(base_url=server.url, connector=connector)
    try:
        yield Running(server, Client(session))
    finally:
        await session.close()
        await server.stop()


async def sample_gauges(
    client: Client, names: tuple[str, ...], stop: asyncio.Event, every_s: float = 0.005
) -> dict[str, list[float]]:
    """Scrape `names` until `stop` is set; the values seen, in order."""
    seen: dict[str, list[float]] = {n: [] for n in names}
    while not stop.is_set():
        text = await client.metrics()
        for n in names:
            seen[n].append(fast_value(text, n))
        await asyncio.sleep(every_s)
    return seen
