"""The demo's batch backlog, submitted as a user submits batch work: through the pool gateway's
OpenAI Batch API, with the official `openai` client.

At the backlog's submission time its requests become one JSONL input file (a line per request,
`custom_id` its request id), which is uploaded (`files.create(purpose="batch")`) and made a
batch whose completion window is the backlog's deadline (`completion_window="55s"`). The
gateway queues the batch's requests as one group of its earliest-deadline-first queue, fills
batch pods and the spare slots of mixed pods, and exports the queue and the output lengths the
operator sizes the batch role from. The batch is read about once a second for the live table;
once it is terminal (or the demo ends) its output and error files are downloaded.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import openai
from openai import AsyncOpenAI
from openai.types import Batch

from chiron_operator.devcluster.demo.traffic import Endpoint, request_body
from chiron_operator.sim.requests import RequestSpec

ENDPOINT: Final = "/v1/completions"
INPUT_FILE: Final = "batch-input.jsonl"
OUTPUT_FILE: Final = "batch-output.jsonl"
ERROR_FILE: Final = "batch-errors.jsonl"
POLL_S: Final = 1.0
TERMINAL: Final = frozenset({"completed", "expired", "failed", "cancelled"})
NOT_SUBMITTED: Final = "not submitted"


def input_file(model: str, requests: Sequence[RequestSpec]) -> bytes:
    """The backlog as a batch input file: one `/v1/completions` request a line."""
    lines = []
    for spec in requests:
        body = request_body(model, spec.prompt_tokens, spec.output_tokens, 0, stream=False)
        # The gateway marks batch work itself (vLLM priority) and never streams it.
        del body["priority"], body["stream"]
        line = {"custom_id": str(spec.request_id), "method": "POST", "url": ENDPOINT, "body": body}
        lines.append(json.dumps(line))
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """The batch as one read of it showed it (`at_s`: when, unix seconds)."""

    at_s: float
    status: str
    total: int
    completed: int
    failed: int

    @classmethod
    def of(cls, batch: Batch, at_s: float) -> BatchProgress:
        counts = batch.request_counts
        if counts is None:
            return cls(at_s, batch.status, 0, 0, 0)
        return cls(at_s, batch.status, counts.total, counts.completed, counts.failed)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """How the backlog's batch ended: the batch object's word and its files' lines.

    `output_lines` counts the backlog's requests answered in the output file;
    `completed_seen_before_expiry` the completed count of the last read before `expires_at`.
    """

    requests: int
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    batch_id: str = ""
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_seen_before_expiry: int = 0
    output_lines: int = 0
    error_lines: int = 0
    error: str = ""

    @property
    def met_deadline(self) -> int:
        """Requests whose line is in the output file and that completed by the deadline.

        A batch whose last request was answered before `expires_at` (it went `finalizing`
        then; the times are whole seconds, so strictly before) meets it for every output line.
        An expired batch's output lines are what ran before the gateway expired it. A batch
        that completed late counts only what a read before its deadline saw completed.
        """
        if self.status == "expired":
            return self.output_lines
        finished, due = self.finalizing_at, self.expires_at
        in_time = finished is not None and due is not None and finished < due
        if self.status == "completed" and in_time:
            return self.output_lines
        return min(self.output_lines, self.completed_seen_before_expiry)


class Gateway(Protocol):
    """Where the pool's gateway is now (`traffic.GatewayEndpoint` on the dev cluster)."""

    async def current(self) -> Endpoint | None: ...


class GatewayApi:
    """An `openai` client on the pool's gateway, renewed when the gateway pod (its port) is."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._client: AsyncOpenAI | None = None
        self._port = 0

    async def current(self) -> AsyncOpenAI | None:
        endpoint = await self._gateway.current()
        if endpoint is None:
            return None
        if self._client is None or endpoint.port != self._port:
            await self.close()
            self._client = AsyncOpenAI(
                base_url=f"http://127.0.0.1:{endpoint.port}/v1",
                api_key="unused",
                max_retries=2,
                timeout=30.0,
            )
            self._port = endpoint.port
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


@dataclass
class BatchBacklog:
    """Submits the backlog as one batch at its submission time (timeline from `start_s`) and
    follows it; input, output and error files are kept in `out`."""

    api: GatewayApi
    model: str
    requests: Sequence[RequestSpec]
    start_s: float
    out: Path
    progress: BatchProgress | None = None
    result: BatchResult | None = None
    _batch: Batch | None = None
    _history: list[BatchProgress] = field(default_factory=list)

    @property
    def submit_s(self) -> float:
        return min((r.arrival_s for r in self.requests), default=0.0)

    @property
    def window_s(self) -> int:
        """The backlog's deadline, as a completion window (whole seconds)."""
        due = [r.deadline_s - r.arrival_s for r in self.requests if r.deadline_s is not None]
        return round(min(due, default=0.0))

    async def run(self) -> None:
        """Submit at the submission time, follow the batch until it is terminal, download."""
        if not self.requests:
            return
        await asyncio.sleep(max(0.0, self.start_s + self.submit_s - time.time()))
        self._batch = await self._submit()
        if self._batch is None:
            return
        while self._record(self._batch).status not in TERMINAL:
            await asyncio.sleep(POLL_S)
            self._batch = await self._retrieve(self._batch)
        self.result = await self._download(self._batch)

    async def _submit(self) -> Batch | None:
        content = input_file(self.model, self.requests)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / INPUT_FILE).write_bytes(content)
        for name in (OUTPUT_FILE, ERROR_FILE):  # a previous run's, not this batch's
            (self.out / name).unlink(missing_ok=True)
        client = await self.api.current()
        if client is None:
            self.result = BatchResult(len(self.requests), NOT_SUBMITTED, error="no ready gateway")
            return None
        try:
            uploaded = await client.files.create(file=(INPUT_FILE, content), purpose="batch")
            return await client.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                # The gateway takes any window as the deadline; the SDK's type knows only 24h.
                completion_window=f"{self.window_s}s",  # type: ignore[arg-type]
            )
        except openai.APIError as exc:
            self.result = BatchResult(len(self.requests), NOT_SUBMITTED, error=str(exc))
            return None

    async def _retrieve(self, batch: Batch) -> Batch:
        """The batch now; the last read when the gateway does not answer (tried again later)."""
        client = await self.api.current()
        if client is None:
            return batch
        try:
            return await client.batches.retrieve(batch.id)
        except openai.APIError:
            return batch

    def _record(self, batch: Batch) -> BatchProgress:
        self.progress = BatchProgress.of(batch, time.time())
        self._history.append(self.progress)
        return self.progress

    async def _download(self, batch: Batch) -> BatchResult:
        """The batch's outcome, its output and error files saved next to its input file."""
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        problem = ""
        client = await self.api.current()
        try:
            if client is None:
                problem = "files not downloaded: no ready gateway"
            else:
                output = await self._lines(client, batch.output_file_id, OUTPUT_FILE)
                errors = await self._lines(client, batch.error_file_id, ERROR_FILE)
        except openai.APIError as exc:
            problem = f"files not downloaded: {exc}"
        ids = {str(r.request_id) for r in self.requests}
        answered = [x for x in output if x.get("custom_id") in ids and _succeeded(x)]
        due = batch.expires_at if batch.expires_at is not None else math.inf
        before = [p.completed for p in self._history if p.at_s < due]
        progress = BatchProgress.of(batch, time.time())
        return BatchResult(
            requests=len(self.requests),
            status=batch.status,
            total=progress.total,
            completed=progress.completed,
            failed=progress.failed,
            batch_id=batch.id,
            expires_at=batch.expires_at,
            finalizing_at=batch.finalizing_at,
            completed_seen_before_expiry=max(before, default=0),
            output_lines=len(answered),
            error_lines=len(errors),
            error=problem,
        )

    async def _lines(
        self, client: AsyncOpenAI, file_id: str | None, name: str
    ) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        content = (await client.files.content(file_id)).content
        (self.out / name).write_bytes(content)
        return [json.loads(line) for line in content.decode().splitlines() if line.strip()]

    async def conclude(self) -> BatchResult:
        """The demo ends: the outcome, reading the batch once more if it was still running."""
        if self.result is not None:
            return self.result
        if self._batch is None:
            return BatchResult(len(self.requests), NOT_SUBMITTED, error="the demo ended first")
        self._batch = await self._retrieve(self._batch)
        self._record(self._batch)
        self.result = await self._download(self._batch)
        return self.result


def _succeeded(line: dict[str, Any]) -> bool:
    response = line.get("response") or {}
    return line.get("error") is None and response.get("status_code") == 200
