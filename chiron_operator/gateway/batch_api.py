"""The OpenAI Batch API on the gateway: files in, batches made of them, results out as files.

- `POST /v1/files` (multipart: `purpose=batch`, `file`), `GET /v1/files`, `GET /v1/files/{id}`,
  `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`;
- `POST /v1/batches` (`input_file_id`, `endpoint`, `completion_window`, `metadata`),
  `GET /v1/batches` (newest first, `after` and `limit`), `GET /v1/batches/{id}`,
  `POST /v1/batches/{id}/cancel`.

Unlike OpenAI's fixed `24h`, any completion window is accepted (`30m`, `2h`, `1d`...): it is the
batch's deadline in the global queue, and the deadline is what the batch controller scales for.
Every handler only reads and writes the store; the replica that holds the dispatcher lock
(`batch_runner.BatchRunner`) validates, runs and finishes batches, so any replica can answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import BodyPartReader, web

from chiron_operator.batches.jsonl import InputFileError, parse_input
from chiron_operator.batches.model import (
    ENDPOINTS,
    BatchRecord,
    BatchStatus,
    FileKind,
    FileRecord,
    InputRequest,
    estimate_output_tokens,
    new_batch_id,
    new_file_id,
)
from chiron_operator.batches.store.threaded import AsyncStore
from chiron_operator.gateway.config import parse_duration_s
from chiron_operator.gateway.dispatcher import Dispatcher
from chiron_operator.gateway.errors import ApiError, error_response

PURPOSE: Final = "batch"
MAX_METADATA_PAIRS: Final = 16
MAX_METADATA_KEY_CHARS: Final = 64
MAX_METADATA_VALUE_CHARS: Final = 512
WARNING_KEY: Final = "chiron_warning"
"""Metadata key of the warning a batch gets when its window looks out of the pool's reach."""
CANCELLABLE: Final = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS})
_CHUNK_BYTES: Final = 1 << 16

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What the Batch API accepts."""

    max_file_bytes: int = 200 * 1024 * 1024
    max_requests: int = 100_000
    min_window_s: float = 10.0


class BatchApi:
    """The Batch API's handlers over one store."""

    def __init__(
        self,
        store: AsyncStore,
        dispatcher: Dispatcher,
        limits: BatchLimits,
        *,
        poke: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.limits = limits
        self.poke = poke  # wakes this replica's batch runner
        self.clock = clock

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self._guard(self.upload))
        app.router.add_get("/v1/files", self._guard(self.list_files))
        app.router.add_get("/v1/files/{id}", self._guard(self.get_file))
        app.router.add_get("/v1/files/{id}/content", self._guard(self.content))
        app.router.add_delete("/v1/files/{id}", self._guard(self.delete_file))
        app.router.add_post("/v1/batches", self._guard(self.create_batch))
        app.router.add_get("/v1/batches", self._guard(self.list_batches))
        app.router.add_get("/v1/batches/{id}", self._guard(self.get_batch))
        app.router.add_post("/v1/batches/{id}/cancel", self._guard(self.cancel))

    @staticmethod
    def _guard(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except ApiError as exc:
                return error_response(exc)

        return guarded

    # Files ------------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            raise ApiError(400, "upload the file as multipart/form-data (purpose, file)")
        purpose, filename, content = await self._read_upload(request)
        if purpose != PURPOSE:
            raise ApiError(400, f"purpose must be 'batch', not {purpose!r}", "purpose")
        if content is None:
            raise ApiError(400, "the form has no file part", "file")
        try:
            await asyncio.to_thread(parse_input, content, max_requests=self.limits.max_requests)
        except InputFileError as exc:
            code = exc.errors[0].code if exc.errors else "invalid_file"
            raise ApiError(400, f"{filename}: {exc}", "file", code=code) from exc
        record = FileRecord(new_file_id(), PURPOSE, filename, len(content), int(self.clock()))
        await self.store.put_file(record, content)
        return web.json_response(record.to_openai())

    async def _read_upload(self, request: web.Request) -> tuple[str, str, bytes | None]:
        purpose, filename, content = "", "upload.jsonl", None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                filename = part.filename or filename
                content = await self._read_limited(part)
        return purpose, filename, content

    async def _read_limited(self, part: BodyPartReader) -> bytes:
        limit = self.limits.max_file_bytes
        chunks: list[bytes] = []
        size = 0
        while chunk := await part.read_chunk(_CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                message = f"the file is over the limit of {limit} bytes"
                raise ApiError(413, message, "file", code="file_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def list_files(self, request: web.Request) -> web.StreamResponse:
        after, limit = _page(request, default=10_000)
        purpose = request.query.get("purpose") or None
        records, more = await self.store.list_files(purpose, after, limit)
        return web.json_response(_listing([r.to_openai() for r in records], more))

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        record = await self._file(request.match_info["id"])
        return web.json_response(record.to_openai())

    async def content(self, request: web.Request) -> web.StreamResponse:
        record = await self._file(request.match_info["id"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = record.bytes
        await response.prepare(request)
        async for chunk in self.store.file_chunks(record.id):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def delete_file(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["id"]
        if not await self.store.delete_file(file_id):
            raise _not_found("file", file_id)
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    async def _file(self, file_id: str) -> FileRecord:
        record = await self.store.get_file(file_id)
        if record is None:
            raise _not_found("file", file_id)
        return record

    # Batches ----------------------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.StreamResponse:
        body = await _json_object(request)
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            message = f"endpoint must be {' or '.join(ENDPOINTS)}, not {endpoint!r}"
            raise ApiError(400, message, "endpoint")
        window_s, window = self._window(body.get("completion_window"))
        metadata = _metadata(body.get("metadata"))
        input_file = await self._input_file(body.get("input_file_id"))
        now = int(self.clock())
        warning = await self._reach_warning(input_file, now + window_s, window_s)
        if warning:
            metadata[WARNING_KEY] = warning[:MAX_METADATA_VALUE_CHARS]
        record = BatchRecord(
            id=new_batch_id(),
            input_file_id=input_file.id,
            endpoint=str(endpoint),
            completion_window=window,
            status=BatchStatus.VALIDATING,
            created_at=now,
            expires_at=now + math.ceil(window_s),
            metadata=metadata,
        )
        await self.store.put_batch(record)
        self.poke()
        counts = await self.store.request_counts(record.id)
        return web.json_response(record.to_openai(counts))

    def _window(self, value: object) -> tuple[float, str]:
        if not isinstance(value, str):
            raise ApiError(400, "completion_window must be a string like 24h", "completion_window")
        try:
            window_s = parse_duration_s(value)
        except ValueError as exc:
            raise ApiError(400, f"completion_window: {exc}", "completion_window") from exc
        if window_s < self.limits.min_window_s:
            message = f"completion_window must be at least {self.limits.min_window_s:.0f}s"
            raise ApiError(400, message, "completion_window")
        return window_s, value.strip()

    async def _input_file(self, file_id: object) -> FileRecord:
        if not isinstance(file_id, str) or not file_id:
            raise ApiError(400, "input_file_id must be a file id", "input_file_id")
        record = await self.store.get_file(file_id)
        if record is None:
            raise ApiError(400, f"no file {file_id!r}", "input_file_id", code="file_not_found")
        if record.kind is not FileKind.UPLOAD or record.purpose != PURPOSE:
            message = f"file {file_id!r} is not a batch input file (purpose 'batch')"
            raise ApiError(400, message, "input_file_id")
        return record

    async def _reach_warning(self, record: FileRecord, deadline_s: float, window_s: float) -> str:
        """A warning when even the pool's largest size could not finish this batch in time."""
        capacity = self.dispatcher.batch_capacity
        if capacity is None or capacity.max_tokens_per_s <= 0:
            return ""
        requests = await self._requests(record)
        mean = self.dispatcher.batch_output_mean_tokens
        tokens = sum(estimate_output_tokens(r.max_tokens, mean) for r in requests)
        ahead = sum(
            count * (mean if math.isfinite(mean) else 0.0)
            for group_s, count in self.dispatcher.router.batch.queued_by_deadline().items()
            if group_s <= deadline_s
        )
        need = (tokens + ahead) / window_s
        if need <= capacity.max_tokens_per_s:
            return ""
        return (
            f"this batch and the work due before it need about {need:.0f} output tokens/s to "
            f"finish in {window_s:.0f} s; at its largest size the pool delivers about "
            f"{capacity.max_tokens_per_s:.0f} ({capacity.describe()}): it will likely expire"
        )

    async def _requests(self, record: FileRecord) -> list[InputRequest]:
        chunks = [chunk async for chunk in self.store.file_chunks(record.id)]
        content = b"".join(chunks)
        return await asyncio.to_thread(parse_input, content, max_requests=self.limits.max_requests)

    async def list_batches(self, request: web.Request) -> web.StreamResponse:
        after, limit = _page(request, default=20)
        records, more = await self.store.list_batches(after, limit)
        data = [r.to_openai(await self.store.request_counts(r.id)) for r in records]
        return web.json_response(_listing(data, more))

    async def get_batch(self, request: web.Request) -> web.StreamResponse:
        record = await self._batch(request.match_info["id"])
        return web.json_response(record.to_openai(await self.store.request_counts(record.id)))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        batch_id = request.match_info["id"]
        record = await self._batch(batch_id)
        moved = await self.store.transition(
            batch_id, BatchStatus.CANCELLING, int(self.clock()), expect=CANCELLABLE
        )
        if moved:
            self.poke()
        else:
            record = await self._batch(batch_id)
            if record.status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                message = (
                    f"batch {batch_id} is {record.status.value}: it can no longer be cancelled"
                )
                raise ApiError(409, message, code="batch_not_cancellable")
        record = await self._batch(batch_id)
        return web.json_response(record.to_openai(await self.store.request_counts(batch_id)))

    async def _batch(self, batch_id: str) -> BatchRecord:
        record = await self.store.get_batch(batch_id)
        if record is None:
            raise _not_found("batch", batch_id)
        return record


def _not_found(kind: str, item_id: str) -> ApiError:
    return ApiError(404, f"no {kind} {item_id!r}", code=f"{kind}_not_found")


def _page(request: web.Request, *, default: int) -> tuple[str | None, int]:
    after = request.query.get("after") or None
    text = request.query.get("limit", str(default))
    if not text.isdigit() or not 1 <= int(text) <= max(default, 100):
        raise ApiError(400, f"limit must be an integer in [1, {max(default, 100)}]", "limit")
    return after, int(text)


def _listing(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _metadata(value: object) -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 string pairs, keys <= 64 and values <= 512 chars."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS:
        raise ApiError(400, "metadata must be an object of at most 16 pairs", "metadata")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_CHARS or key == WARNING_KEY:
            raise ApiError(400, f"metadata key {key!r} is too long or reserved", "metadata")
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE_CHARS:
            message = f"metadata[{key!r}] must be a string of at most 512 characters"
            raise ApiError(400, message, "metadata")
    return dict(value)
