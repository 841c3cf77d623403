"""One Batch API request sent to a pod, and what its answer means for the request.

The request goes as its input line gave it, with two changes: `priority` marks it batch work
(vLLM serves interactive work first), and it is streamed with its usage (`stream_options.
include_usage`): the first chunk with output tells the routing core the prefill is over (it
paces batch prefills on pods that serve interactive traffic), and `batch_stream` puts the
chunks back together into the whole body the output file holds. An answer is final (a
completion, or a client error such as an unknown model, which no retry mends) or worth another
try (no answer, the pod draining, overload, a stream cut short).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import aiohttp

from chiron_operator.gateway.batch_stream import Completion
from chiron_operator.gateway.config import PodInfo
from chiron_operator.routing import BATCH_PRIORITY

RETRYABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
"""Answers that say "not now" rather than "never": overload, a pod going away, a timeout."""


class Verdict(Enum):
    DONE = "done"  # a completion: its line goes to the output file
    FAILED = "failed"  # a final error: its line goes to the error file
    RETRY = "retry"  # try again later, on any pod


@dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt got: the pod's status and JSON body, or why there was none."""

    status: int | None
    body: Any
    problem: str = ""

    @property
    def verdict(self) -> Verdict:
        if self.status is None or self.status in RETRYABLE_STATUS:
            return Verdict.RETRY
        return Verdict.DONE if self.status == 200 else Verdict.FAILED

    @property
    def answered(self) -> bool:
        """Whether the pod answered at all (a pod that did not is ejected for a while)."""
        return self.status is not None

    def describe(self) -> str:
        if self.status is None:
            return self.problem
        message = self.body.get("message") if isinstance(self.body, dict) else None
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(error, dict):
            message = error.get("message", message)
        return f"the pod answered {self.status}" + (f": {message}" if message else "")


def upstream_payload(body_text: str) -> bytes:
    """The request as it goes to the pod."""
    body = json.loads(body_text)
    body["priority"] = BATCH_PRIORITY
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


async def call(
    session: aiohttp.ClientSession,
    pod: PodInfo,
    path: str,
    payload: bytes,
    timeout_s: float,
    *,
    on_first_token: Callable[[], None] | None = None,
) -> Answer:
    """POST the request to the pod and read its whole answer; `on_first_token` is called once,
    when the first chunk with output arrives."""
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.post(
            pod.url + path, data=payload, headers=headers, timeout=timeout
        ) as answer:
            if answer.status != 200 or answer.content_type != "text/event-stream":
                return _whole(answer.status, await answer.read())
            return await _streamed(answer, pod, on_first_token)
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        return Answer(None, None, f"no answer from {pod.name}: {type(exc).__name__}: {exc}")


def _whole(status: int, raw: bytes) -> Answer:
    try:
        body: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = {"message": raw.decode(errors="replace")[:1000]}
    return Answer(status, body)


async def _streamed(
    answer: aiohttp.ClientResponse, pod: PodInfo, on_first_token: Callable[[], None] | None
) -> Answer:
    """Read server-sent events up to `[DONE]`. An error event, or a stream that ends without
    `[DONE]` (the pod went away mid-answer), is worth another try."""
    completion = Completion()
    async for raw in answer.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return Answer(200, completion.body())
        try:
            chunk = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return Answer(None, None, f"{pod.name} sent an unreadable event: {data[:200]!r}")
        if not isinstance(chunk, dict) or "error" in chunk or chunk.get("object") == "error":
            error = chunk.get("error", chunk.get("message")) if isinstance(chunk, dict) else chunk
            return Answer(None, None, f"{pod.name} ended the stream with an error: {error}")
        if completion.add(chunk) and on_first_token is not None:
            on_first_token()
            on_first_token = None
    return Answer(None, None, f"{pod.name} ended the stream before [DONE]")
