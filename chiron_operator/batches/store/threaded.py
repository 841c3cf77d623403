"""The asyncio face of a batch store: every call runs on one worker thread of its own.

One thread, not a pool: the store's connection is used by one thread at a time anyway, and a
single queue keeps the calls in the order the event loop made them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from chiron_operator.batches.model import (
    BatchRecord,
    BatchStatus,
    FileRecord,
    InputRequest,
    OutputStats,
    QueuedRequest,
    RequestCounts,
    RequestState,
)
from chiron_operator.batches.store.base import Leadership, Store

P = ParamSpec("P")
T = TypeVar("T")


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


class AsyncStore:
    """`Store`'s methods as coroutines of the same names, run on the store's worker thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.url = store.url
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-store")

    async def _call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(function, *args, **kwargs)
        )

    async def migrate(self) -> None:
        await self._call(self.store.migrate)

    async def close(self) -> None:
        """Close the store (after the calls already queued), then stop the worker thread."""
        await self._call(self.store.close)
        self._executor.shutdown(wait=False)

    def leadership(self, name: str) -> Leadership:
        """The store's own (blocking) dispatcher lock: creating it does no I/O, and its methods
        use a connection or file of their own, so call them in any thread off the event loop
        (`asyncio.to_thread`): a slow store call then never delays noticing a lost lock."""
        return self.store.leadership(name)

    # Files ------------------------------------------------------------------------------------

    async def put_file(self, record: FileRecord, content: bytes) -> None:
        await self._call(self.store.put_file, record, content)

    async def get_file(self, file_id: str) -> FileRecord | None:
        return await self._call(self.store.get_file, file_id)

    async def list_files(
        self, purpose: str | None, after: str | None, limit: int
    ) -> tuple[list[FileRecord], bool]:
        return await self._call(self.store.list_files, purpose, after, limit)

    async def file_chunks(self, file_id: str) -> AsyncIterator[bytes]:
        """The file's content chunk by chunk, each read on the worker thread; nothing when
        there is no such file."""
        chunks = await self._call(self.store.file_chunks, file_id)
        if chunks is None:
            return
        while (chunk := await self._call(_next_chunk, chunks)) is not None:
            yield chunk

    async def delete_file(self, file_id: str) -> bool:
        return await self._call(self.store.delete_file, file_id)

    # Batches ----------------------------------------------------------------------------------

    async def put_batch(self, record: BatchRecord) -> None:
        await self._call(self.store.put_batch, record)

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        return await self._call(self.store.get_batch, batch_id)

    async def list_batches(self, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        return await self._call(self.store.list_batches, after, limit)

    async def batches_in(self, statuses: frozenset[BatchStatus]) -> list[BatchRecord]:
        return await self._call(self.store.batches_in, statuses)

    async def request_counts(self, batch_id: str) -> RequestCounts:
        return await self._call(self.store.request_counts, batch_id)

    async def start_batch(self, batch_id: str, requests: Sequence[InputRequest], now: int) -> bool:
        return await self._call(self.store.start_batch, batch_id, requests, now)

    async def transition(
        self,
        batch_id: str,
        to: BatchStatus,
        now: int,
        *,
        expect: frozenset[BatchStatus],
        errors: list[dict[str, object]] | None = None,
    ) -> bool:
        return await self._call(
            self.store.transition, batch_id, to, now, expect=expect, errors=errors
        )

    async def finalize(
        self, batch_id: str, to: BatchStatus, now: int, *, expect: frozenset[BatchStatus]
    ) -> BatchRecord | None:
        return await self._call(self.store.finalize, batch_id, to, now, expect=expect)

    # Requests ---------------------------------------------------------------------------------

    async def queued_requests(self, batch_id: str) -> list[QueuedRequest]:
        return await self._call(self.store.queued_requests, batch_id)

    async def request_body(self, batch_id: str, line_no: int) -> str:
        return await self._call(self.store.request_body, batch_id, line_no)

    async def record_attempt(self, batch_id: str, line_no: int) -> int:
        return await self._call(self.store.record_attempt, batch_id, line_no)

    async def record_result(
        self,
        batch_id: str,
        line_no: int,
        state: RequestState,
        line: str,
        output_tokens: int | None = None,
    ) -> bool:
        return await self._call(
            self.store.record_result, batch_id, line_no, state, line, output_tokens
        )

    async def fail_queued(self, batch_id: str, line_for: Callable[[str], str]) -> int:
        return await self._call(self.store.fail_queued, batch_id, line_for)

    async def output_stats(self, recent: int) -> OutputStats:
        return await self._call(self.store.output_stats, recent)
