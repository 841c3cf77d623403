"""The `Store` methods both SQL backends share, over a tiny transaction interface (`schema.Tx`).

A backend says how to run one transaction (`_run`) and fills in its dialect's few differences:
the binary column type, where ordering numbers come from and how bytes of text are counted.
Statements here use `?` placeholders; the PostgreSQL backend rewrites them to `%s`.
"""

from __future__ import annotations

import json
import statistics
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Final, TypeVar

from chiron_operator.batches.model import (
    STATUS_TIME_FIELD,
    BatchRecord,
    BatchStatus,
    FileKind,
    FileRecord,
    InputRequest,
    OutputStats,
    QueuedRequest,
    RequestCounts,
    RequestState,
    error_file_id,
    output_file_id,
)
from chiron_operator.batches.store.base import StoreError
from chiron_operator.batches.store.schema import (
    BATCH_COLUMNS,
    FILE_COLUMNS,
    REQUEST_COLUMNS,
    Tx,
    batch_row,
    batch_values,
    file_row,
    marks,
    migrate,
    newest_first,
    query,
    schema_v1,
    select_by_id,
)

T = TypeVar("T")

CHUNK_BYTES: Final = 4 << 20  # SQLite seeks a blob from its start: few, large chunks
LINES_PER_CHUNK: Final = 2000
OUTPUT_PURPOSE: Final = "batch_output"  # what OpenAI calls a batch's output and error files
LINES_SQL: Final = (
    "SELECT line_no, result_line FROM requests WHERE batch_id = ? AND state = ? AND line_no > ? "
    "ORDER BY line_no LIMIT ?"
)


class SqlStore(ABC):
    """The `Store` protocol over SQL; a backend supplies transactions and its dialect."""

    url: str
    blob_type: str = "BLOB"
    for_update: str = ""  # the row locking clause of the dialect, if it has one

    @abstractmethod
    def _run(self, work: Callable[[Tx], T], *, write: bool = False) -> T:
        """Run `work` in one transaction (committed if it returns, rolled back if it raises);
        the backend's errors become `StoreError`."""

    @abstractmethod
    def _next_seq(self, table: str, column: str) -> str:
        """An SQL expression for the next ordering number of `table.column`."""

    @abstractmethod
    def _octets(self, column: str) -> str:
        """An SQL expression for the length of a text column in UTF-8 bytes."""

    @abstractmethod
    def _migration_lock(self, tx: Tx) -> None:
        """Keep migrations of replicas starting together apart."""

    def _extra_schema(self) -> list[str]:
        return []

    def migrate(self) -> None:
        self._run(self._migrate, write=True)

    def _migrate(self, tx: Tx) -> None:
        self._migration_lock(tx)
        migrate(tx, [schema_v1(self.blob_type) + self._extra_schema()])

    # Files ------------------------------------------------------------------------------------

    def put_file(self, record: FileRecord, content: bytes) -> None:
        self._run(partial(self._insert_file, record, content), write=True)

    def _insert_file(self, record: FileRecord, content: bytes | None, tx: Tx) -> None:
        # A conflict is this very insert retried after its commit's answer was lost (ids are
        # random or derived from the batch), so it is a success, not an error.
        tx.execute(
            "INSERT INTO files (id, seq, purpose, filename, bytes, created_at, kind, batch_id, "
            f"content) VALUES (?, {self._next_seq('files', 'seq')}, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (record.id, record.purpose, record.filename, record.bytes, record.created_at,
             record.kind.value, record.batch_id, content),
        )  # fmt: skip

    def get_file(self, file_id: str) -> FileRecord | None:
        rows = self._run(partial(select_by_id, "files", FILE_COLUMNS, file_id))
        return file_row(rows[0]) if rows else None

    def list_files(
        self, purpose: str | None, after: str | None, limit: int
    ) -> tuple[list[FileRecord], bool]:
        """Files newest first, after the id `after` (none when there is no such file)."""
        conditions = [] if purpose is None else [("purpose = ?", purpose)]
        page = partial(newest_first, table="files", columns=FILE_COLUMNS, conditions=conditions)
        rows, more = self._run(partial(page, after=after, limit=limit))
        return [file_row(row) for row in rows], more

    def file_chunks(self, file_id: str) -> Iterator[bytes] | None:
        """The content in chunks, each read in its own short transaction (a slow reader holds
        no snapshot); a file deleted while it is read raises StoreError."""
        record = self.get_file(file_id)
        if record is None:
            return None
        if record.kind is FileKind.UPLOAD:
            return self._upload_chunks(file_id)
        state = RequestState.DONE if record.kind is FileKind.OUTPUT else RequestState.FAILED
        return self._line_chunks(record.batch_id or "", state)

    def _upload_chunks(self, file_id: str) -> Iterator[bytes]:
        offset = 0
        while True:
            chunk = self._run(partial(self._content_slice, file_id, offset, CHUNK_BYTES))
            if chunk is None:
                raise StoreError(f"file {file_id} was deleted while it was read")
            if chunk:
                yield chunk
            if len(chunk) < CHUNK_BYTES:
                return
            offset += len(chunk)

    @abstractmethod
    def _content_slice(self, file_id: str, offset: int, size: int, tx: Tx) -> bytes | None:
        """`size` bytes of the content from `offset` (fewer at its end); None without the file."""

    def _line_chunks(self, batch_id: str, state: RequestState) -> Iterator[bytes]:
        last = 0
        while True:
            params = (batch_id, state.value, last, LINES_PER_CHUNK)
            rows = self._run(partial(query, LINES_SQL, params))
            if rows:
                yield "".join(f"{line}\n" for _, line in rows).encode()
            if len(rows) < LINES_PER_CHUNK:
                return
            last = rows[-1][0]

    def delete_file(self, file_id: str) -> bool:
        sql = "DELETE FROM files WHERE id = ?"
        return self._run(lambda tx: tx.execute(sql, (file_id,)) > 0, write=True)

    # Batches ----------------------------------------------------------------------------------

    def put_batch(self, record: BatchRecord) -> None:
        values = batch_values(record)
        sql = (
            f"INSERT INTO batches (seq, {BATCH_COLUMNS}) VALUES "
            f"({self._next_seq('batches', 'seq')}, {marks(len(values))}) "
            "ON CONFLICT (id) DO NOTHING"  # a retried insert, as for files
        )
        self._run(lambda tx: tx.execute(sql, values), write=True)

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        rows = self._run(partial(select_by_id, "batches", BATCH_COLUMNS, batch_id))
        return batch_row(rows[0]) if rows else None

    def list_batches(self, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """Batches newest first, after the id `after` (none when there is no such batch)."""
        page = partial(newest_first, table="batches", columns=BATCH_COLUMNS, conditions=())
        rows, more = self._run(partial(page, after=after, limit=limit))
        return [batch_row(row) for row in rows], more

    def batches_in(self, statuses: frozenset[BatchStatus]) -> list[BatchRecord]:
        if not statuses:
            return []
        sql = f"SELECT {BATCH_COLUMNS} FROM batches WHERE status IN ({marks(len(statuses))}) "
        params = sorted(s.value for s in statuses)
        rows = self._run(lambda tx: tx.rows(sql + "ORDER BY seq", params))
        return [batch_row(row) for row in rows]

    def request_counts(self, batch_id: str) -> RequestCounts:
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = ? THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN state = ? THEN 1 ELSE 0 END), 0) FROM requests "
            "WHERE batch_id = ?"
        )
        params = (RequestState.DONE.value, RequestState.FAILED.value, batch_id)
        total, done, failed = self._run(lambda tx: tx.rows(sql, params))[0]
        return RequestCounts(int(total), int(done), int(failed))

    def start_batch(self, batch_id: str, requests: Sequence[InputRequest], now: int) -> bool:
        return self._run(partial(self._start, batch_id, requests, now), write=True)

    def _start(self, batch_id: str, requests: Sequence[InputRequest], now: int, tx: Tx) -> bool:
        # The status moves first: the row lock it takes makes a concurrent start wait, then
        # find the batch no longer validating.
        expect = frozenset({BatchStatus.VALIDATING})
        if not self._move(tx, batch_id, BatchStatus.IN_PROGRESS, now, expect=expect):
            return False
        queued = RequestState.QUEUED.value
        rows = [
            (batch_id, r.line_no, r.custom_id, r.url, r.model, r.body, r.max_tokens, queued, 0)
            for r in requests
        ]
        tx.bulk_insert("requests", REQUEST_COLUMNS, rows)
        return True

    def _move(
        self,
        tx: Tx,
        batch_id: str,
        to: BatchStatus,
        now: int,
        *,
        expect: frozenset[BatchStatus],
        errors: list[dict[str, object]] | None = None,
    ) -> bool:
        """Move the batch to `to` if its status is in `expect` (as `transition`, in `tx`)."""
        if not expect:
            return False
        sets: list[str] = ["status = ?"]
        params: list[object] = [to.value]
        if to in STATUS_TIME_FIELD:
            sets.append(f"{STATUS_TIME_FIELD[to]} = ?")
            params.append(now)
        if errors is not None:
            sets.append("errors = ?")
            params.append(json.dumps(errors))
        sql = (
            f"UPDATE batches SET {', '.join(sets)} WHERE id = ? "
            f"AND status IN ({marks(len(expect))})"
        )
        return tx.execute(sql, [*params, batch_id, *sorted(s.value for s in expect)]) > 0

    def transition(
        self,
        batch_id: str,
        to: BatchStatus,
        now: int,
        *,
        expect: frozenset[BatchStatus],
        errors: list[dict[str, object]] | None = None,
    ) -> bool:
        move = partial(self._move, batch_id=batch_id, to=to, now=now, expect=expect, errors=errors)
        return self._run(move, write=True)

    def finalize(
        self, batch_id: str, to: BatchStatus, now: int, *, expect: frozenset[BatchStatus]
    ) -> BatchRecord | None:
        return self._run(partial(self._finalize, batch_id, to, now, expect), write=True)

    def _finalize(
        self, batch_id: str, to: BatchStatus, now: int, expect: frozenset[BatchStatus], tx: Tx
    ) -> BatchRecord | None:
        if not self._move(tx, batch_id, to, now, expect=expect):
            return None
        sizes = {
            state: (count, size)
            for state, count, size in tx.rows(
                f"SELECT state, COUNT(*), SUM({self._octets('result_line')} + 1) FROM requests "
                "WHERE batch_id = ? AND state IN (?, ?) GROUP BY state",
                (batch_id, RequestState.DONE.value, RequestState.FAILED.value),
            )
        }
        ids: dict[FileKind, str | None] = {}
        for kind, state, file_id, suffix in (
            (FileKind.OUTPUT, RequestState.DONE, output_file_id(batch_id), "output"),
            (FileKind.ERROR, RequestState.FAILED, error_file_id(batch_id), "error"),
        ):
            count, size = sizes.get(state.value, (0, 0))
            ids[kind] = file_id if count else None
            if count:
                name = f"{batch_id}_{suffix}.jsonl"
                record = FileRecord(file_id, OUTPUT_PURPOSE, name, int(size), now, kind, batch_id)
                self._insert_file(record, None, tx)
        tx.execute(
            "UPDATE batches SET output_file_id = ?, error_file_id = ? WHERE id = ?",
            (ids[FileKind.OUTPUT], ids[FileKind.ERROR], batch_id),
        )
        return batch_row(select_by_id("batches", BATCH_COLUMNS, batch_id, tx)[0])

    # Requests ---------------------------------------------------------------------------------

    def queued_requests(self, batch_id: str) -> list[QueuedRequest]:
        sql = (
            "SELECT r.line_no, r.custom_id, b.expires_at, r.max_tokens, r.attempts "
            "FROM requests r JOIN batches b ON b.id = r.batch_id "
            "WHERE r.batch_id = ? AND r.state = ? ORDER BY r.line_no"
        )
        params = (batch_id, RequestState.QUEUED.value)
        rows = self._run(lambda tx: tx.rows(sql, params))
        return [QueuedRequest(batch_id, n, c, float(d), m, a) for n, c, d, m, a in rows]

    def request_body(self, batch_id: str, line_no: int) -> str:
        """The request's JSON text; KeyError when the batch has no such line."""
        sql = "SELECT body FROM requests WHERE batch_id = ? AND line_no = ?"
        rows = self._run(lambda tx: tx.rows(sql, (batch_id, line_no)))
        if not rows:
            raise KeyError(f"batch {batch_id} has no line {line_no}")
        return str(rows[0][0])

    def record_attempt(self, batch_id: str, line_no: int) -> int:
        """Count one more failed attempt of a queued row (an answered row keeps its count);
        the attempts so far. KeyError when the batch has no such line."""
        return self._run(partial(self._attempt, batch_id, line_no), write=True)

    @staticmethod
    def _attempt(batch_id: str, line_no: int, tx: Tx) -> int:
        key = (batch_id, line_no)
        rows = tx.rows(
            "UPDATE requests SET attempts = attempts + 1 WHERE batch_id = ? AND line_no = ? "
            "AND state = ? RETURNING attempts",
            (*key, RequestState.QUEUED.value),
        )
        rows = rows or tx.rows(
            "SELECT attempts FROM requests WHERE batch_id = ? AND line_no = ?", key
        )
        if not rows:
            raise KeyError(f"batch {batch_id} has no line {line_no}")
        return int(rows[0][0])

    def record_result(
        self,
        batch_id: str,
        line_no: int,
        state: RequestState,
        line: str,
        output_tokens: int | None = None,
    ) -> bool:
        """As the protocol says; `line` is stored without a trailing newline (the file adds
        one), and `output_tokens` is kept for `output_stats`."""
        if state is RequestState.QUEUED:
            raise ValueError("a result is done or failed, not queued")
        sql = (
            "UPDATE requests SET state = ?, result_line = ?, output_tokens = ?, "
            f"finished_seq = {self._next_seq('requests', 'finished_seq')} "
            "WHERE batch_id = ? AND line_no = ? AND state = ?"
        )
        params = (state.value, line.removesuffix("\n"), output_tokens, batch_id, line_no,
                  RequestState.QUEUED.value)  # fmt: skip
        return self._run(lambda tx: tx.execute(sql, params) > 0, write=True)

    def fail_queued(self, batch_id: str, line_for: Callable[[str], str]) -> int:
        return self._run(partial(self._fail_queued, batch_id, line_for), write=True)

    def _fail_queued(self, batch_id: str, line_for: Callable[[str], str], tx: Tx) -> int:
        queued = RequestState.QUEUED.value
        rows = tx.rows(
            "SELECT line_no, custom_id FROM requests WHERE batch_id = ? AND state = ? "
            f"ORDER BY line_no{self.for_update}",
            (batch_id, queued),
        )
        tx.executemany(
            "UPDATE requests SET state = ?, result_line = ? "
            "WHERE batch_id = ? AND line_no = ? AND state = ?",
            [
                (RequestState.FAILED.value, line_for(custom_id).removesuffix("\n"), batch_id,
                 line_no, queued)
                for line_no, custom_id in rows
            ],
        )  # fmt: skip
        return len(rows)

    def output_stats(self, recent: int) -> OutputStats:
        sql = (
            "SELECT output_tokens FROM requests WHERE state = ? AND output_tokens IS NOT NULL "
            "ORDER BY finished_seq DESC LIMIT ?"
        )
        rows = self._run(lambda tx: tx.rows(sql, (RequestState.DONE.value, recent)))
        tokens = [float(row[0]) for row in rows]
        if not tokens:
            return OutputStats()
        return OutputStats(len(tokens), statistics.fmean(tokens), statistics.pstdev(tokens))
