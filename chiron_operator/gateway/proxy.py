"""One request through the gateway: classify it, wait for a pod, relay vLLM's answer.

An attempt that fails before any byte reached the client is invisible to it: the request is
routed again (a connection refused, a pod draining with 503) or queued again (a batch request
cut off for an interactive one, or whose pod was lost). Once bytes were relayed, a failure ends
the client's stream with an error event; the gateway never sends a client two answers.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import web

from chiron_operator.batches.lines import output_tokens
from chiron_operator.core.enums import RequestClass
from chiron_operator.gateway.config import GatewayConfig, PodInfo, parse_duration_s
from chiron_operator.gateway.dispatcher import CutOffError, Dispatcher, Pending, RefusedError
from chiron_operator.gateway.errors import ApiError, error_response
from chiron_operator.routing import Ticket

log = logging.getLogger(__name__)

CLASS_HEADER: Final = "x-chiron-class"
DEADLINE_HEADER: Final = "x-chiron-deadline"
_RETRYABLE_STATUS: Final = frozenset({502, 503, 504})
_HOP_HEADERS: Final = frozenset({"content-length", "transfer-encoding", "connection"})


class NoAnswerError(Exception):
    """The pod gave no usable answer and nothing reached the client: try elsewhere."""


@dataclass(frozen=True, slots=True)
class Classified:
    """A request's class and, for batch work, its absolute deadline (Unix seconds)."""

    request_class: RequestClass
    deadline_s: float


def classify(headers: Any, now_s: float, default_deadline_s: float) -> Classified:
    """The class and deadline a client declared; ApiError naming the header when invalid."""
    raw = str(headers.get(CLASS_HEADER, "interactive")).strip().lower()
    try:
        request_class = RequestClass(raw)
    except ValueError:
        message = f"{CLASS_HEADER}: {raw!r} is not interactive or batch"
        raise ApiError(400, message, CLASS_HEADER) from None
    deadline_text = headers.get(DEADLINE_HEADER)
    if request_class is RequestClass.INTERACTIVE:
        if deadline_text is not None:
            raise ApiError(400, f"{DEADLINE_HEADER} applies to batch-class requests only")
        return Classified(request_class, math.inf)
    if deadline_text is None:
        return Classified(request_class, now_s + default_deadline_s)
    try:
        return Classified(request_class, now_s + parse_duration_s(str(deadline_text)))
    except ValueError as exc:
        raise ApiError(400, f"{DEADLINE_HEADER}: {exc}", DEADLINE_HEADER) from exc


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object a client posted; ApiError when it is not one."""
    try:
        body = json.loads(await request.read() or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


class Relay:
    """Writes one upstream answer to the client, streaming it through as it arrives."""

    def __init__(
        self, request: web.Request, pending: Pending, on_first_byte: Callable[[], None]
    ) -> None:
        self.request = request
        self.pending = pending
        self.response: web.StreamResponse | None = None
        self._on_first_byte = on_first_byte

    @property
    def started(self) -> bool:
        return self.response is not None

    async def stream(self, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        async for chunk in upstream.content.iter_any():
            if self.response is None:
                self.response = web.StreamResponse(status=upstream.status)
                self.response.headers.update(_forwardable(upstream.headers))
                # Bytes reached the client: a cut-off could no longer be hidden by a resend.
                self.pending.ticket.preemptible = False
                await self.response.prepare(self.request)
                self._on_first_byte()
            await self.response.write(chunk)
        if self.response is None:
            raise NoAnswerError("the pod closed the stream before any byte")
        await self.response.write_eof()
        return self.response

    async def whole(self, upstream: aiohttp.ClientResponse) -> web.Response:
        body = await upstream.read()
        response = web.Response(status=upstream.status, body=body)
        response.headers.update(_forwardable(upstream.headers))
        return response


def _forwardable(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}


class Forwarder:
    """Sends requests to pods for the gateway's handlers."""

    def __init__(
        self, config: GatewayConfig, dispatcher: Dispatcher, session: aiohttp.ClientSession
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.session = session

    async def handle(self, request: web.Request, path: str) -> web.StreamResponse:
        """An OpenAI generation request, end to end."""
        try:
            body = await read_body(request)
            now_s = self.dispatcher.clock()
            kind = classify(request.headers, now_s, self.config.default_batch_deadline_s)
        except ApiError as exc:
            return error_response(exc)
        ticket = Ticket(
            f"req-{uuid.uuid4().hex}",
            kind.request_class,
            now_s,
            kind.deadline_s,
            cost_tokens=_max_tokens(body),
        )
        ticket.group = ticket.request_id
        body["priority"] = ticket.priority  # the gateway owns the order vLLM serves classes in
        payload = json.dumps(body).encode()
        pending = self.dispatcher.open(ticket)
        try:
            return await self._serve(request, path, payload, bool(body.get("stream")), pending)
        except RefusedError as exc:
            return error_response(ApiError(exc.status, str(exc), retry_after_s=exc.retry_after_s))
        finally:
            self.dispatcher.abandon(pending)

    async def _serve(
        self, request: web.Request, path: str, payload: bytes, stream: bool, pending: Pending
    ) -> web.StreamResponse:
        ticket = pending.ticket
        metrics = self.dispatcher.metrics
        started_s = ticket.arrival_s

        def first_byte() -> None:
            elapsed_s = self.dispatcher.clock() - started_s
            metrics.ttft.labels(ticket.request_class.value).observe(elapsed_s)

        relay = Relay(request, pending, first_byte)
        while True:
            pod = await self.dispatcher.acquire(pending)
            try:
                answer = await self.dispatcher.attempt(
                    pending, self._once(pod, path, payload, stream, relay)
                )
            except CutOffError:
                continue  # the router queued it again in its place
            except NoAnswerError as exc:
                if relay.started:
                    return await self._broken(relay, pending, exc)
                if ticket.retries >= self.config.max_retries:
                    self.dispatcher.finish(pending, "failed")
                    message = f"no pod answered after {ticket.retries + 1} attempts: {exc}"
                    return error_response(ApiError(502, message, kind="upstream_error"))
                log.info("%s on %s: %s; trying again", ticket.request_id, pod.name, exc)
                self.dispatcher.eject(pod.name, self.config.eject_s)
                self.dispatcher.retry(pending)
                continue
            self.dispatcher.finish(pending)
            if not ticket.interactive and not relay.started:
                self._learn_output(answer)
            return answer

    def _learn_output(self, answer: web.StreamResponse) -> None:
        """A batch-class completion's length teaches the batch queue's estimates (streamed ones
        report usage only when asked to, so only whole answers are read)."""
        if answer.status != 200 or not isinstance(answer, web.Response) or answer.body is None:
            return
        try:
            tokens = output_tokens(json.loads(bytes(answer.body)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        if tokens is not None:
            self.dispatcher.note_batch_output(tokens)

    async def _once(
        self, pod: PodInfo, path: str, payload: bytes, stream: bool, relay: Relay
    ) -> web.StreamResponse:
        headers = {"Content-Type": "application/json"}
        try:
            async with self.session.post(pod.url + path, data=payload, headers=headers) as up:
                if up.status in _RETRYABLE_STATUS:
                    raise NoAnswerError(f"the pod answered {up.status}")
                if stream and up.status == 200:
                    return await relay.stream(up)
                return await relay.whole(up)
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise NoAnswerError(f"{type(exc).__name__}: {exc}") from exc

    async def _broken(self, relay: Relay, pending: Pending, exc: Exception) -> web.StreamResponse:
        """The pod failed mid-stream after bytes reached the client: end the stream honestly."""
        self.dispatcher.finish(pending, "failed")
        response = relay.response
        assert response is not None
        error = {"error": {"message": f"the pod failed mid-stream: {exc}", "type": "server_error"}}
        try:
            await response.write(f"data: {json.dumps(error)}\n\n".encode())
            await response.write_eof()
        except ConnectionError:
            pass  # the client left too: nothing more to tell it
        return response


def _max_tokens(body: dict[str, Any]) -> float:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > 0:
            return float(value)
    return 0.0
