"""The embedded batch store: one SQLite file on the gateway's volume.

The database runs in WAL mode with `synchronous=NORMAL`: a commit is in the operating system's
hands when it returns, so it survives the gateway being killed (even with SIGKILL), though not
the machine losing power, which a pod's restart is not. Writers from several processes on the
same file wait for each other up to `busy_timeout`.

The dispatcher lock is an exclusive `flock` on a file next to the database: the kernel drops it
when its holder's process ends however it ends, so a standby gateway on the same volume takes
over without any timeout to tune.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from chiron_operator.batches.store.base import StoreError
from chiron_operator.batches.store.schema import Row, Tx
from chiron_operator.batches.store.sql import SqlStore, T

BUSY_TIMEOUT_MS: Final = 10_000


class SqliteTx:
    """A transaction on a connection in autocommit mode (BEGIN and COMMIT are explicit)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self.connection.execute(sql, params).rowcount

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self.connection.execute(sql, params).fetchall()

    def executemany(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        self.connection.executemany(sql, params)

    def bulk_insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        marks = ", ".join("?" * len(columns))
        self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


class FlockLeadership:
    """The dispatcher lock: an exclusive, non-blocking `flock` on `lock_path`."""

    def __init__(self, lock_path: Path) -> None:
        self.lock_path = lock_path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            if self.still_held():
                return True
            self.release()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def still_held(self) -> bool:
        """Held while the descriptor is open and the lock file is still the one locked (a
        deleted and recreated file could be locked by someone else)."""
        if self._fd is None:
            return False
        try:
            return os.fstat(self._fd).st_ino == os.stat(self.lock_path).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file drops its flock


class SqliteStore(SqlStore):
    """The batch store in the SQLite file at `path` (created if missing; call `migrate()`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        # Opened by whoever builds the store, used from the store's worker thread: the lock
        # keeps any other caller's transaction from interleaving with the worker's.
        self._lock = threading.Lock()
        try:
            self._connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            self._connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._connection.execute("PRAGMA journal_mode = WAL")
            self._connection.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the batch store {self.path}: {exc}") from exc

    def _run(self, work: Callable[[SqliteTx], T], *, write: bool = False) -> T:
        # A write takes the database's write lock up front: a read-then-write transaction
        # upgrading later could fail with SQLITE_BUSY without waiting.
        with self._lock:
            connection = self._connection
            try:
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                result = work(SqliteTx(connection))
                connection.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled back already (a full disk does); a transaction left
                # open would make every later BEGIN fail.
                if connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"batch store {self.path}: {exc}") from exc
                raise
            return result

    def _migration_lock(self, tx: Tx) -> None:
        """Nothing to do: the migration's `BEGIN IMMEDIATE` already keeps others out."""

    def _next_seq(self, table: str, column: str) -> str:
        # SQLite writers are serialized, so the maximum plus one is unique (and indexed).
        return f"(SELECT COALESCE(MAX({column}), 0) + 1 FROM {table})"

    def _octets(self, column: str) -> str:
        return f"LENGTH(CAST({column} AS BLOB))"

    def _content_slice(self, file_id: str, offset: int, size: int, tx: Tx) -> bytes | None:
        # Incremental blob I/O copies just the slice (its seek still walks the blob's page
        # chain, hence few large chunks); substr() would copy all the content for each chunk.
        rows = tx.rows("SELECT rowid, typeof(content) FROM files WHERE id = ?", (file_id,))
        if not rows:
            return None
        rowid, kind = rows[0]
        if kind != "blob":
            return b""
        with self._connection.blobopen("files", "content", rowid, readonly=True) as blob:
            if offset >= len(blob):
                return b""
            blob.seek(offset)
            return blob.read(size)

    def leadership(self, name: str) -> FlockLeadership:
        """The lock file `PATH.NAME.lock` (its own file per name, as flock locks whole files)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return FlockLeadership(self.path.with_name(f"{self.path.name}.{safe}.lock"))

    def close(self) -> None:
        with self._lock:
            self._connection.close()
