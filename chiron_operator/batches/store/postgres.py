"""The shared batch store: a PostgreSQL database several gateway replicas use at once.

Any replica serves the Batch API from it; one at a time dispatches its batches, the one holding
a session-level advisory lock (`pg_try_advisory_lock`) on a connection of its own. Why an
advisory lock and not a Kubernetes Lease:

- the lock lives exactly as long as its holder's database session: a killed gateway's lock goes
  with its connection, which TCP keepalives (and `tcp_user_timeout`) notice within seconds;
  there is no TTL to tune and no renewal to miss, and clocks do not matter;
- it needs no RBAC and no Kubernetes at all (the gateway runs outside a cluster too);
- it is kept where the work is: a replica cut off from the database loses the lock and cannot
  write anyway.

Fencing: every answer is written by `record_result`'s conditional update (only a row still
`queued` changes), so even a dispatcher that lost its lock without noticing yet cannot answer a
request twice; the worst it does is run one that its successor also runs.

The URL must reach PostgreSQL itself or a pooler in session mode: session-level locks mean
nothing through a transaction-mode pooler.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chiron_operator.batches.store.base import StoreError
from chiron_operator.batches.store.schema import Row, Tx
from chiron_operator.batches.store.sql import SqlStore, T

log = logging.getLogger(__name__)

CONNECT_PARAMS: Final = {
    # A peer that vanished (node down, network cut) is given up on after about
    # idle 5 s + 3 probes x 2 s, or 10 s of unacknowledged data, instead of the kernel's hours.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "connect_timeout": 10,
}
SEQUENCE: Final = "chiron_seq"

Connection = psycopg.Connection[tuple[Any, ...]]


def mask_url(url: str) -> str:
    """The URL with its password (in the authority or a `password=` parameter) as `***`."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    in_query = any(key == "password" for key, _ in query)
    if parts.password is None and not in_query:
        return url  # untouched: rebuilding would drop the slashes of `sqlite:////abs`
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    masked = [(key, "***" if key == "password" else value) for key, value in query]
    rebuilt = parts._replace(netloc=netloc, query=urllib.parse.urlencode(masked, safe="*"))
    return urllib.parse.urlunsplit(rebuilt)


def lock_key(name: str) -> int:
    """A stable advisory lock key for `name`: the first 8 bytes of its SHA-256, signed."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


MIGRATION_KEY: Final = lock_key("chiron-batch-store-migration")


@lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    # The shared statements use `?` and never a literal `%` or `?`.
    return sql.replace("?", "%s")


def connect(dsn: str, *, autocommit: bool) -> Connection:
    """A connection to `dsn` with the keepalive settings (the URL's own win)."""
    params = {k: v for k, v in CONNECT_PARAMS.items() if k not in conninfo_to_dict(dsn)}
    return psycopg.connect(make_conninfo(dsn, **params), autocommit=autocommit)


class PgTx:
    """A transaction on a psycopg cursor."""

    def __init__(self, cursor: psycopg.Cursor[tuple[Any, ...]]) -> None:
        self.cursor = cursor

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        self.cursor.execute(_placeholders(sql), params)
        return self.cursor.rowcount

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        self.cursor.execute(_placeholders(sql), params)
        return self.cursor.fetchall()

    def executemany(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        # psycopg pipelines executemany: one round trip for all the rows, not one each.
        self.cursor.executemany(_placeholders(sql), params)

    def bulk_insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        with self.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


class AdvisoryLeadership:
    """The dispatcher lock: `pg_try_advisory_lock(lock_key(name))` on a dedicated connection.

    Its methods may be called from any thread, one at a time or not.
    """

    def __init__(self, dsn: str, name: str) -> None:
        self.name = name
        self.key = lock_key(name)
        self._dsn = dsn
        self._connection: Connection | None = None
        self._held = False
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """As the protocol says; False too when the database cannot be reached."""
        with self._lock:
            # Advisory locks count re-entries: taking a held one again would need two unlocks.
            if self._held and self._alive():
                return True
            try:
                if self._connection is None:
                    self._connection = connect(self._dsn, autocommit=True)
                sql = "SELECT pg_try_advisory_lock(CAST(%s AS BIGINT))"
                row = self._connection.execute(sql, (self.key,)).fetchone()
            except psycopg.Error as exc:
                log.warning("dispatcher lock %r: %s", self.name, exc)
                self._close()
                return False
            self._held = bool(row and row[0])
            return self._held

    def still_held(self) -> bool:
        """Whether the lock's session is alive (it holds the lock as long as it is)."""
        with self._lock:
            return self._held and self._alive()

    def _alive(self) -> bool:
        try:
            if self._connection is None:
                return False
            self._connection.execute("SELECT 1")
        except psycopg.Error as exc:
            log.warning("dispatcher lock %r lost: %s", self.name, exc)
            self._close()
            return False
        return True

    def release(self) -> None:
        with self._lock:
            if self._held and self._connection is not None:
                with contextlib.suppress(psycopg.Error):
                    sql = "SELECT pg_advisory_unlock(CAST(%s AS BIGINT))"
                    self._connection.execute(sql, (self.key,))
            self._close()

    def _close(self) -> None:
        connection, self._connection, self._held = self._connection, None, False
        if connection is not None:
            connection.close()


class PostgresStore(SqlStore):
    """The batch store in the PostgreSQL database at `url` (a libpq URL; call `migrate()`).

    One connection, opened on first use; a call that finds it broken reconnects and runs its
    transaction once more before it raises StoreError (every write is safe to repeat).
    """

    blob_type = "BYTEA"
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        self.url = mask_url(url)
        self._dsn = url
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    def _run(self, work: Callable[[PgTx], T], *, write: bool = False) -> T:
        with self._lock:
            try:
                return self._transaction(work)
            except psycopg.OperationalError as exc:
                log.warning("batch store %s: %s; connecting again", self.url, exc)
            except psycopg.Error as exc:
                raise StoreError(f"batch store {self.url}: {exc}") from exc
            try:
                return self._transaction(work)
            except psycopg.Error as exc:
                raise StoreError(f"batch store {self.url}: {exc}") from exc

    def _transaction(self, work: Callable[[PgTx], T]) -> T:
        if self._connection is None:
            self._connection = connect(self._dsn, autocommit=False)
        connection = self._connection
        try:
            with connection.cursor() as cursor:
                result = work(PgTx(cursor))
            connection.commit()
        except psycopg.OperationalError:
            self._discard()
            raise
        except BaseException:
            try:
                connection.rollback()
            except psycopg.Error:
                self._discard()
            raise
        return result

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _next_seq(self, table: str, column: str) -> str:
        return f"nextval('{SEQUENCE}')"  # one sequence orders files, batches and answers

    def _octets(self, column: str) -> str:
        return f"OCTET_LENGTH({column})"

    def _content_slice(self, file_id: str, offset: int, size: int, tx: Tx) -> bytes | None:
        rows = tx.rows(
            "SELECT substr(content, CAST(? AS INTEGER), CAST(? AS INTEGER)) FROM files "
            "WHERE id = ?",
            (offset + 1, size, file_id),
        )
        return None if not rows else bytes(rows[0][0] or b"")

    def _migration_lock(self, tx: Tx) -> None:
        # Replicas starting together would otherwise race to create the same tables.
        tx.execute("SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))", (MIGRATION_KEY,))

    def _extra_schema(self) -> list[str]:
        return [
            f"CREATE SEQUENCE {SEQUENCE}",
            # Uncompressed out-of-line storage lets substr() fetch just a chunk's pages.
            "ALTER TABLE files ALTER COLUMN content SET STORAGE EXTERNAL",
        ]

    def leadership(self, name: str) -> AdvisoryLeadership:
        return AdvisoryLeadership(self._dsn, name)

    def close(self) -> None:
        with self._lock:
            self._discard()
