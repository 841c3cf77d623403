"""What the gateway asks of a batch store, whatever the database behind it.

Every method is one transaction and blocking: the gateway calls them from one worker thread
(`store.threaded.AsyncStore`), never from the event loop. Requests are answered exactly once:
`record_result` turns a row from `queued` to `done` or `failed` only if it is still `queued`, so a
dispatcher that lost its leadership, or a retry after a crash, cannot write a second answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

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


class StoreError(Exception):
    """The store failed (connection lost, disk full); the message says how."""


class Leadership(Protocol):
    """Who of the gateway replicas sharing a store dispatches its batches: exactly one at a time."""

    def try_acquire(self) -> bool:
        """Become the dispatcher if nobody is; True while this process is it."""
        ...

    def still_held(self) -> bool:
        """Whether this process is still the dispatcher (False after its lock was lost)."""
        ...

    def release(self) -> None: ...


class Store(Protocol):
    """Files, batches and their request rows, durably."""

    url: str  # the store's URL with any password masked, for logs

    def migrate(self) -> None:
        """Create the tables if they are missing (idempotent; safe from several replicas)."""
        ...

    def close(self) -> None: ...

    def leadership(self, name: str) -> Leadership:
        """The dispatcher lock named `name` (one per pool)."""
        ...

    # Files ------------------------------------------------------------------------------------

    def put_file(self, record: FileRecord, content: bytes) -> None: ...

    def get_file(self, file_id: str) -> FileRecord | None:
        """The file, or None when there is none (never was, or deleted)."""
        ...

    def list_files(
        self, purpose: str | None, after: str | None, limit: int
    ) -> tuple[list[FileRecord], bool]:
        """Files newest first, after the id `after`; and whether more follow."""
        ...

    def file_chunks(self, file_id: str) -> Iterator[bytes] | None:
        """The file's content in chunks: an upload's bytes; a batch's output or error lines
        (each ending in a newline) in input order. None when there is no such file."""
        ...

    def delete_file(self, file_id: str) -> bool:
        """Forget the file; False when there was none."""
        ...

    # Batches ----------------------------------------------------------------------------------

    def put_batch(self, record: BatchRecord) -> None:
        """Insert a new batch (status `validating`)."""
        ...

    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    def list_batches(self, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """Batches newest first, after the id `after`; and whether more follow."""
        ...

    def batches_in(self, statuses: frozenset[BatchStatus]) -> list[BatchRecord]:
        """Every batch in one of `statuses`, oldest first."""
        ...

    def request_counts(self, batch_id: str) -> RequestCounts: ...

    def start_batch(self, batch_id: str, requests: Sequence[InputRequest], now: int) -> bool:
        """Insert the batch's request rows (all `queued`) and move it `validating` ->
        `in_progress`, in one transaction; False (and nothing written) when it was not
        `validating` any more."""
        ...

    def transition(
        self,
        batch_id: str,
        to: BatchStatus,
        now: int,
        *,
        expect: frozenset[BatchStatus],
        errors: list[dict[str, object]] | None = None,
    ) -> bool:
        """Move the batch to `to` if its status is in `expect`, setting `to`'s timestamp (and
        `errors` when given); False when it was not (another replica moved it first)."""
        ...

    def finalize(
        self, batch_id: str, to: BatchStatus, now: int, *, expect: frozenset[BatchStatus]
    ) -> BatchRecord | None:
        """In one transaction: write the batch's output and error file records (ids from
        `model.output_file_id` / `model.error_file_id`, only for files with lines; their
        content is read from the rows) and move it from a status in `expect` to `to` (a
        terminal one). Idempotent: None when it is not in `expect` (already finalized)."""
        ...

    # Requests ---------------------------------------------------------------------------------

    def queued_requests(self, batch_id: str) -> list[QueuedRequest]:
        """The batch's rows still `queued`, in line order."""
        ...

    def request_body(self, batch_id: str, line_no: int) -> str: ...

    def record_attempt(self, batch_id: str, line_no: int) -> int:
        """Count one more failed attempt of a queued row; the attempts so far."""
        ...

    def record_result(
        self,
        batch_id: str,
        line_no: int,
        state: RequestState,
        line: str,
        output_tokens: int | None = None,
    ) -> bool:
        """Answer a `queued` row for good (`done` with its output line, or `failed` with its
        error line); False when it had been answered already (the line is not written twice)."""
        ...

    def fail_queued(self, batch_id: str, line_for: Callable[[str], str]) -> int:
        """Fail every row of the batch still `queued`, each with `line_for(custom_id)` (an
        expired or cancelled batch); how many."""
        ...

    def output_stats(self, recent: int) -> OutputStats:
        """Output lengths of the `recent` most recently completed rows that reported them."""
        ...
