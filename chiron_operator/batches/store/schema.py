"""The batch store's tables, their columns and how records map to rows, for both backends.

Lists are ordered by `seq`, an insertion number, not by `created_at`: two batches created in
the same second still list newest first, and an `after` cursor is never ambiguous.

The schema only ever grows by migrations: `schema_version` holds the number of the last one
applied, and `migrate` applies the ones after it (the first creates the tables).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final, Protocol

from chiron_operator.batches.model import (
    STATUS_TIME_FIELD,
    BatchRecord,
    BatchStatus,
    FileKind,
    FileRecord,
)
from chiron_operator.batches.store.base import StoreError

Row = tuple[Any, ...]

TIME_FIELDS: Final = tuple(STATUS_TIME_FIELD.values())
FILE_FIELDS: Final = ("id", "purpose", "filename", "bytes", "created_at", "kind", "batch_id")
BATCH_FIELDS: Final = (
    *("id", "input_file_id", "endpoint", "completion_window", "status", "created_at"),
    *("expires_at", "metadata", "errors", "output_file_id", "error_file_id", *TIME_FIELDS),
)
FILE_COLUMNS: Final = ", ".join(FILE_FIELDS)
BATCH_COLUMNS: Final = ", ".join(BATCH_FIELDS)
REQUEST_COLUMNS: Final = (
    *("batch_id", "line_no", "custom_id", "url", "model", "body", "max_tokens", "state"),
    "attempts",
)


def schema_v1(blob_type: str) -> list[str]:
    """The first schema: files, batches and their request rows."""
    times = "".join(f", {name} BIGINT" for name in TIME_FIELDS)
    return [
        "CREATE TABLE files (id TEXT PRIMARY KEY, seq BIGINT NOT NULL, purpose TEXT NOT NULL, "
        "filename TEXT NOT NULL, bytes BIGINT NOT NULL, created_at BIGINT NOT NULL, "
        f"kind TEXT NOT NULL, batch_id TEXT, content {blob_type})",
        "CREATE INDEX files_seq ON files (seq)",
        "CREATE TABLE batches (id TEXT PRIMARY KEY, seq BIGINT NOT NULL, "
        "input_file_id TEXT NOT NULL, endpoint TEXT NOT NULL, completion_window TEXT NOT NULL, "
        "status TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, "
        "metadata TEXT NOT NULL, errors TEXT NOT NULL, output_file_id TEXT, "
        f"error_file_id TEXT{times})",
        "CREATE INDEX batches_seq ON batches (seq)",
        "CREATE INDEX batches_status ON batches (status, seq)",
        "CREATE TABLE requests (batch_id TEXT NOT NULL, line_no INTEGER NOT NULL, "
        "custom_id TEXT NOT NULL, url TEXT NOT NULL, model TEXT NOT NULL, body TEXT NOT NULL, "
        "max_tokens INTEGER, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
        "result_line TEXT, output_tokens INTEGER, finished_seq BIGINT, "
        "PRIMARY KEY (batch_id, line_no), UNIQUE (batch_id, custom_id))",
        # line_no last so that a batch's rows of one state come out in line order unsorted.
        "CREATE INDEX requests_state ON requests (batch_id, state, line_no)",
        "CREATE INDEX requests_finished ON requests (finished_seq)",
    ]


class Tx(Protocol):
    """One open transaction of a backend."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    def executemany(self, sql: str, params: Sequence[Sequence[object]]) -> None: ...

    def bulk_insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Insert many rows at once, the fastest way the backend has."""
        ...


def file_row(row: Row) -> FileRecord:
    fields = dict(zip(FILE_FIELDS, row, strict=True))
    return FileRecord(**fields | {"kind": FileKind(fields["kind"])})


def batch_row(row: Row) -> BatchRecord:
    fields = dict(zip(BATCH_FIELDS, row, strict=True))
    status, metadata, errors = fields["status"], fields["metadata"], fields["errors"]
    parsed = {"status": BatchStatus(status), "metadata": json.loads(metadata)}
    return BatchRecord(**fields | parsed | {"errors": json.loads(errors)})


def batch_values(record: BatchRecord) -> tuple[object, ...]:
    """The batch's row, in `BATCH_FIELDS` order, its JSON fields as text."""
    fields = {name: getattr(record, name) for name in BATCH_FIELDS}
    fields |= {"status": record.status.value, "metadata": json.dumps(record.metadata)}
    return tuple((fields | {"errors": json.dumps(record.errors)}).values())


def marks(count: int) -> str:
    """`count` comma-separated placeholders."""
    return ", ".join("?" * count)


def migrate(tx: Tx, migrations: Sequence[Sequence[str]]) -> None:
    """Apply the migrations (each a list of statements) the database has not had yet;
    StoreError when a newer gateway migrated it further than these go."""
    tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    version = tx.rows("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0]
    if version > len(migrations):
        raise StoreError(f"the store's schema is version {version}, newer than this gateway's")
    for number, statements in enumerate(migrations[version:], start=version + 1):
        for statement in statements:
            tx.execute(statement)
        tx.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))


def query(sql: str, params: Sequence[object], tx: Tx) -> list[Row]:
    """The rows of `sql` (for `functools.partial`, the transaction last)."""
    return tx.rows(sql, params)


def select_by_id(table: str, columns: str, row_id: str, tx: Tx) -> list[Row]:
    return tx.rows(f"SELECT {columns} FROM {table} WHERE id = ?", (row_id,))


def newest_first(
    tx: Tx,
    *,
    table: str,
    columns: str,
    conditions: Sequence[tuple[str, object]],
    after: str | None,
    limit: int,
) -> tuple[list[Row], bool]:
    """One page of `table` newest first (after the row `after`, none if there is no such row),
    and whether more rows follow it. `conditions` are (clause, parameter) pairs."""
    if after is not None:
        conditions = [*conditions, (f"seq < (SELECT seq FROM {table} WHERE id = ?)", after)]
    where = " AND ".join(clause for clause, _ in conditions)
    sql = f"SELECT {columns} FROM {table}{f' WHERE {where}' if where else ''} "
    rows = tx.rows(sql + "ORDER BY seq DESC LIMIT ?", [*(p for _, p in conditions), limit + 1])
    return rows[:limit], len(rows) > limit
