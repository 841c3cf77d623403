"""The emulator's HTTP server: vLLM's OpenAI endpoints, /health and /metrics on aiohttp.

- `POST /v1/completions`, `POST /v1/chat/completions`: whole or streamed (`"stream": true`,
  server-sent events `data: {...}` ending with `data: [DONE]`); see `protocol` for the fields.
- `GET /v1/models`: the served model names.
- `GET /health`: 503 during the modelled startup delay, while shutting down or if the engine
  loop died; 200 otherwise.
- `GET /metrics`: vLLM's metric families in the classic text format, colons intact.

A client that closes its connection aborts its request, streamed or whole, as vLLM's cancelled
endpoints do: aiohttp >= 3.9 no longer cancels a handler on disconnect unless asked to, so the
runner is started with `handler_cancellation`.

On SIGTERM (or SIGINT) `serve` shuts down as vLLM does with `--shutdown-timeout`
(vllm-project/vllm#36666): /health turns 503 at once, so the readiness probe fails; new
requests are refused with a 503; the requests in flight run on for at most the shutdown timeout
(0, vLLM's default: not at all), and a second signal cuts that wait short, as it does uvicorn's.
Then the server stops accepting connections, aborts what is left as a killed pod would (a stream
ends with an error event and no [DONE]; a whole response becomes a 503) and returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from chiron_operator.emulator.args import EmulatorConfig
from chiron_operator.emulator.engine import Engine, RequestAbortedError, RequestHandle
from chiron_operator.emulator.metrics import CONTENT_TYPE, VllmMetrics
from chiron_operator.emulator.protocol import ApiError, GenerateRequest, Responses, parse_request

log = logging.getLogger(__name__)

# Bounds how long stop() waits for handlers after aborting them, so SIGTERM always exits.
SHUTDOWN_TIMEOUT_S: Final = 5.0
SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _sse(payload: object) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


@web.middleware
async def _api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status)


class EmulatorServer:
    """The engine and its HTTP front end, started and stopped together."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.metrics = VllmMetrics(
            model_name=config.model_name,
            max_model_len=config.max_model_len,
            names=config.metric_names,
        )
        self.engine = Engine(config, self.metrics)
        self._runner: web.AppRunner | None = None
        self._ready_at = float("inf")
        self._draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._created = int(time.time())
        self.port = config.port

    @property
    def url(self) -> str:
        """Base URL on the configured host and the bound port."""
        return f"http://{self.config.host}:{self.port}"

    def app(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(middlewares=[_api_errors])
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def start(self) -> None:
        """Start the engine, bind the port and begin the modelled startup delay."""
        loop = asyncio.get_running_loop()
        self.engine.start()
        access_log = log if self.config.log_level <= logging.DEBUG else None
        # handler_cancellation: a client that disconnects cancels its handler, which aborts
        # its request in the engine, as vLLM aborts requests whose client went away.
        self._runner = web.AppRunner(
            self.app(),
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            access_log=access_log,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._ready_at = loop.time() + self.config.startup_delay_s / self.config.time_scale

    async def drain(self, timeout_s: float, force: asyncio.Event | None = None) -> int:
        """Refuse new requests and wait up to `timeout_s` for those in flight (or for `force`,
        or the engine's end); the number still in flight."""
        self._draining = True
        if self._in_flight and timeout_s > 0:
            log.info("draining %d requests in flight for up to %gs", self._in_flight, timeout_s)
            waits = {asyncio.ensure_future(self._idle.wait()), self.engine.task}
            if force is not None:
                waits.add(asyncio.ensure_future(force.wait()))
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits - {self.engine.task}:
                waiter.cancel()
        if self._in_flight:
            log.warning("shutdown timeout: %d requests still in flight", self._in_flight)
        return self._in_flight

    async def stop(self) -> None:
        """Stop accepting, abort in-flight requests, close connections and stop the engine."""
        self._draining = True
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()
            aborted = self.engine.abort_all()
            log.info("shutting down: aborted %d in-flight requests", aborted)
            await self._runner.cleanup()
        await self.engine.stop()

    def _ready(self) -> bool:
        loop = asyncio.get_running_loop()
        return not self._draining and self.engine.healthy and loop.time() >= self._ready_at

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self._ready() else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def _models(self, request: web.Request) -> web.Response:
        cards = [
            {
                "id": name,
                "object": "model",
                "created": self._created,
                "owned_by": "vllm",
                "root": self.config.model,
                "parent": None,
                "max_model_len": self.config.max_model_len,
            }
            for name in self.config.served_model_names
        ]
        return web.json_response({"object": "list", "data": cards})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        if not self._ready():
            raise ApiError(503, "the server is not ready", "ServiceUnavailableError")
        # Counted from here to the last byte, so a drain waits for responses, not just tokens.
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._serve_request(request, chat=chat)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _serve_request(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON body: {exc}") from exc
        req = parse_request(
            body,
            chat=chat,
            served=self.config.served_model_names,
            max_model_len=self.config.max_model_len,
        )
        responses = self._responses(req)
        handle = self.engine.submit(
            request_id=responses.request_id,
            prompt_tokens=req.prompt_tokens,
            max_tokens=req.max_tokens,
            priority=req.priority,
        )
        try:
            if req.stream:
                return await self._stream(request, responses, handle)
            return await self._whole(responses, handle)
        finally:
            # Reached early only when the client went away (cancellation or a failed write).
            self.engine.abort(handle)

    def _responses(self, req: GenerateRequest) -> Responses:
        prefix = "chatcmpl" if req.chat else "cmpl"
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        return Responses(req, request_id, int(time.time()), self.config.seed)

    async def _whole(self, responses: Responses, handle: RequestHandle) -> web.Response:
        count = 0
        try:
            async for _ in handle:
                count += 1
        except RequestAbortedError as exc:
            raise ApiError(
                503, "request aborted: the server is shutting down", "AbortError"
            ) from exc
        return web.json_response(responses.full(count))

    async def _stream(
        self, request: web.Request, responses: Responses, handle: RequestHandle
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        if responses.req.chat:
            await resp.write(_sse(responses.role_chunk()))
        count = 0
        try:
            async for index in handle:
                count += 1
                await resp.write(_sse(responses.token_chunk(index)))
        except RequestAbortedError:
            error = ApiError(503, "request aborted: the server is shutting down", "AbortError")
            await resp.write(_sse({"error": error.body()}))
            return resp
        if responses.req.include_usage:
            await resp.write(_sse(responses.usage_chunk(count)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _on_signal(stop: asyncio.Event, force: asyncio.Event) -> None:
    # The first signal starts the drain, a second one ends it at once.
    (force if stop.is_set() else stop).set()


async def serve(config: EmulatorConfig) -> int:
    """Run until SIGTERM or SIGINT (exit code 0) or until the engine fails (1)."""
    server = EmulatorServer(config)
    await server.start()
    log.info(
        "emulated vLLM server for %s (profile %s, time scale %g) listening on %s",
        config.model,
        config.latency.name,
        config.time_scale,
        server.url,
    )
    loop = asyncio.get_running_loop()
    stop, force = asyncio.Event(), asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, _on_signal, stop, force)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopping, server.engine.task}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set() and server.engine.healthy:
            await server.drain(config.shutdown_timeout_s, force)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        stopping.cancel()
        task = server.engine.task
        failure = task.exception() if task.done() and not task.cancelled() else None
        await server.stop()
    if failure is not None or not stop.is_set():
        log.error("engine loop stopped unexpectedly: %r", failure)
        return 1
    return 0
