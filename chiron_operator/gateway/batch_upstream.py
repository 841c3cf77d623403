"""One Batch API request sent to a pod, and what its answer means for the request.

The request goes as its input line gave it, with two changes: `priority` marks it batch work
(vLLM serves interactive work first), and `stream` is off (the output file holds whole bodies).
An answer is final (a completion, or a client error such as an unknown model, which no retry
mends) or worth another try (no answer, the pod draining, overload).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import aiohttp

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
    body["stream"] = False
    body.pop("stream_options", None)
    return json.dumps(body).encode()


async def call(
    session: aiohttp.ClientSession, pod: PodInfo, path: str, payload: bytes, timeout_s: float
) -> Answer:
    """POST the request to the pod and read its whole answer."""
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.post(
            pod.url + path, data=payload, headers=headers, timeout=timeout
        ) as answer:
            raw = await answer.read()
            status = answer.status
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        return Answer(None, None, f"no answer from {pod.name}: {type(exc).__name__}: {exc}")
    try:
        body: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = {"message": raw.decode(errors="replace")[:1000]}
    return Answer(status, body)
