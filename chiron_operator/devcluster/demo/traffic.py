"""Client-side traffic for the dev cluster's pools, measured as a user would measure it.

A pool's Services select pods by label (`<pool>-interactive`: interactive + mixed pods,
`<pool>-batch`: batch + mixed pods). The dev cluster has no kube-proxy, so `Endpoints` reads the
ready pods behind a Service from the API, as an EndpointSlice controller would, and `Balancer`
sends each request to the endpoint with the fewest requests this client has in flight there.

A pool with a gateway has one entrypoint instead: `GatewayEndpoint` finds the ready gateway
pod (its loopback port), which is what the demo's clients talk to.

`complete` sends one OpenAI completion to a loopback port and measures it client side:
TTFT (first token - send) and the request's mean inter-token gap, the same definitions the
simulator's summary uses (an interactive request meets its SLO when both are within target).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from chiron_operator.core.enums import RequestClass
from chiron_operator.devcluster.cluster.apiclient import AsyncApi
from chiron_operator.devcluster.cluster.pods import PORT_ANNOTATION
from chiron_operator.kube.labels import (
    ANNOTATION_MAX_NUM_SEQS,
    GATEWAY_COMPONENT,
    LABEL_COMPONENT,
    LABEL_POOL,
    LABEL_ROLE,
    SERVES_LABEL,
)
from chiron_operator.kube.pods import is_serving

PROMPT_TOKENS_FIELD: Final = "chiron_prompt_tokens"
DATA_PREFIX: Final = b"data: "


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready pod behind a Service, with the batch size it runs (--max-num-seqs)."""

    pod: str
    role: str
    port: int
    seqs: int = 1


@dataclass(frozen=True, slots=True)
class Completion:
    """One request's outcome, measured by the client (times in unix seconds / seconds)."""

    pod: str
    role: str
    sent_s: float
    done_s: float
    ok: bool
    tokens: int
    ttft_s: float | None
    mean_itl_s: float | None
    error: str = ""


def endpoints_of(pods: list[dict[str, Any]], request_class: RequestClass) -> list[Endpoint]:
    """The ready pods a class's Service selects. Pure."""
    label = SERVES_LABEL[request_class]
    found = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        port = str(annotations.get(PORT_ANNOTATION, ""))
        seqs = str(annotations.get(ANNOTATION_MAX_NUM_SEQS, ""))
        if labels.get(label) == "true" and port.isdigit() and is_serving(pod):
            role = str(labels.get(LABEL_ROLE))
            size = int(seqs) if seqs.isdigit() else 1
            found.append(Endpoint(str(metadata["name"]), role, int(port), size))
    return sorted(found, key=lambda e: e.pod)


def gateway_endpoint(pods: list[dict[str, Any]]) -> Endpoint | None:
    """The pool's ready gateway pod (the first by name), as an endpoint. Pure."""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        port = str((metadata.get("annotations") or {}).get(PORT_ANNOTATION, ""))
        if labels.get(LABEL_COMPONENT) == GATEWAY_COMPONENT and port.isdigit() and is_serving(pod):
            return Endpoint(str(metadata["name"]), "gateway", int(port))
    return None


class GatewayEndpoint:
    """The pool's gateway, re-read at most every `refresh_s` (a replaced pod has a new port)."""

    def __init__(self, api: AsyncApi, namespace: str, pool: str) -> None:
        self._api = api
        self._path = f"/api/v1/namespaces/{namespace}/pods"
        self._selector = f"{LABEL_POOL}={pool}"
        self._cached: Endpoint | None = None
        self._read_at = -1e9
        self.refresh_s = 0.5

    async def current(self) -> Endpoint | None:
        now = time.monotonic()
        if now - self._read_at >= self.refresh_s:
            self._read_at = now
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                self._cached = gateway_endpoint(await self._api.items(self._path, self._selector))
        return self._cached


class Endpoints:
    """The ready pods behind one of a pool's Services, re-read at most every `refresh_s`."""

    def __init__(
        self, api: AsyncApi, namespace: str, pool: str, request_class: RequestClass
    ) -> None:
        self._api = api
        self._path = f"/api/v1/namespaces/{namespace}/pods"
        self._selector = f"{LABEL_POOL}={pool}"
        self._class = request_class
        self._cached: list[Endpoint] = []
        self._read_at = -1e9
        self.refresh_s = 0.5

    async def current(self) -> list[Endpoint]:
        now = time.monotonic()
        if now - self._read_at >= self.refresh_s:
            self._read_at = now
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                pods = await self._api.items(self._path, self._selector)
                self._cached = endpoints_of(pods, self._class)
        return self._cached


class Balancer:
    """Least outstanding requests (from this client) among a Service's endpoints."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.inflight: Counter[str] = Counter()

    async def pick(self) -> Endpoint | None:
        found = await self.endpoints.current()
        if not found:
            return None
        return min(found, key=lambda e: (self.inflight[e.pod], e.pod))

    async def pick_with_room(self) -> Endpoint | None:
        """The least filled endpoint (in-flight over batch size) that has a free slot."""
        free = [e for e in await self.endpoints.current() if self.inflight[e.pod] < e.seqs]
        if not free:
            return None
        return min(free, key=lambda e: (self.inflight[e.pod] / e.seqs, e.pod))


def request_body(
    model: str, prompt_tokens: int, max_tokens: int, priority: int, *, stream: bool
) -> dict[str, Any]:
    """An OpenAI completion with an exact prompt length (the emulator's extension field)."""
    return {
        "model": model,
        # The emulator has no tokenizer: the extension field sets the prompt's length exactly.
        "prompt": "x",
        "max_tokens": max_tokens,
        "priority": priority,
        "stream": stream,
        PROMPT_TOKENS_FIELD: prompt_tokens,
    }


async def complete(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    body: Mapping[str, Any],
    *,
    timeout_s: float = 600.0,
    headers: Mapping[str, str] | None = None,
) -> Completion:
    """Send one completion to `endpoint` and measure it; never raises on failure.

    Streamed (`"stream": true`) it measures TTFT and mean ITL; whole, only the completion.
    """
    sent = time.time()
    url = f"http://127.0.0.1:{endpoint.port}/v1/completions"
    timing = _Timing(sent)
    try:
        async with session.post(
            url,
            json=dict(body),
            headers=dict(headers or {}),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            if response.status != 200:
                timing.error = f"HTTP {response.status}"
            elif body.get("stream"):
                await timing.read_stream(response)
            else:
                timing.read_whole(await response.json())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        timing.error = type(exc).__name__
    return timing.completion(endpoint)


@dataclass
class _Timing:
    """What the client saw of one response."""

    sent_s: float
    first_s: float | None = None
    last_s: float | None = None
    tokens: int = 0
    error: str = ""

    async def read_stream(self, response: aiohttp.ClientResponse) -> None:
        async for line in response.content:
            kind = _event(line)
            if kind == "token":
                self.last_s = time.time()
                self.first_s = self.first_s if self.first_s is not None else self.last_s
                self.tokens += 1
            elif kind == "error":
                self.error = "aborted"

    def read_whole(self, payload: Mapping[str, Any]) -> None:
        usage = payload.get("usage") or {}
        self.tokens = int(usage.get("completion_tokens") or 0)
        self.last_s = time.time()

    def completion(self, endpoint: Endpoint) -> Completion:
        first, last = self.first_s, self.last_s
        itl = None
        if first is not None and last is not None and self.tokens > 1:
            itl = (last - first) / (self.tokens - 1)
        ttft = None if first is None else first - self.sent_s
        return Completion(
            endpoint.pod,
            endpoint.role,
            self.sent_s,
            time.time(),
            not self.error and self.tokens > 0,
            self.tokens,
            ttft,
            itl,
            self.error,
        )


def _event(line: bytes) -> str:
    """'token', 'error', or '' for a server-sent-events line of a streamed completion."""
    if not line.startswith(DATA_PREFIX):
        return ""
    payload = line[len(DATA_PREFIX) :].strip()
    if payload == b"[DONE]":
        return ""
    try:
        decoded = json.loads(payload)
    except ValueError:
        return ""
    if "error" in decoded:
        return "error"
    return "token" if decoded.get("choices") else ""


class HoldLoad:
    """Keeps `concurrency` long requests in flight at a Service until stopped.

    What a saturating client looks like to the pods: every slot refilled as soon as a request
    ends. Stopping cancels the requests (the emulator aborts them, as vLLM does on disconnect).
    """

    def __init__(
        self,
        balancer: Balancer,
        session: aiohttp.ClientSession,
        model: str,
        *,
        concurrency: int,
        max_tokens: int = 2000,
        prompt_tokens: int = 128,
        priority: int = 0,
    ) -> None:
        self._balancer = balancer
        self._session = session
        # Whole responses: the pods work the same, and the client parses one reply, not 2000.
        self._body = request_body(model, prompt_tokens, max_tokens, priority, stream=False)
        self._concurrency = concurrency
        self._tasks: list[asyncio.Task[None]] = []
        self.completions: list[Completion] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._slot()) for _ in range(self._concurrency)]

    async def _slot(self) -> None:
        while True:
            endpoint = await self._balancer.pick()
            if endpoint is None:
                await asyncio.sleep(0.2)
                continue
            self._balancer.inflight[endpoint.pod] += 1
            try:
                done = await complete(self._session, endpoint, self._body)
            finally:
                self._balancer.inflight[endpoint.pod] -= 1
            self.completions.append(done)
            if not done.ok:
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
