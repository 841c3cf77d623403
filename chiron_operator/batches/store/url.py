"""Open a batch store from its URL, as the gateway's `--batch-store` flag gives it.

- `sqlite:///relative/path.db` (relative to the working directory) or `sqlite:////abs/path.db`:
  three slashes, then the path, as SQLAlchemy writes it;
- `postgresql://user:password@host:5432/db?sslmode=require` (or `postgres://`): any libpq URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from chiron_operator.batches.store.base import Store
from chiron_operator.batches.store.postgres import PostgresStore, mask_url
from chiron_operator.batches.store.sqlite import SqliteStore

__all__ = ["check_store_url", "mask_url", "open_store", "sqlite_path"]

SQLITE_PREFIX: Final = "sqlite:///"
POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")


def sqlite_path(url: str) -> Path:
    """The file a `sqlite:///` URL names; ValueError when it names none."""
    path = url.removeprefix(SQLITE_PREFIX)
    if not path or path == ":memory:":
        raise ValueError(
            f"{url!r} names no database file: the batch store must outlive the gateway, "
            "write sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return Path(path)


def check_store_url(url: str) -> None:
    """ValueError, saying what is accepted, unless `url` is a store URL `open_store` opens."""
    if url.startswith(SQLITE_PREFIX):
        sqlite_path(url)
    elif not url.startswith(POSTGRES_SCHEMES):
        raise ValueError(
            f"unsupported batch store URL {mask_url(url)!r}: use sqlite:///path/to/file.db "
            "or postgresql://user:password@host:port/database"
        )


def open_store(url: str) -> Store:
    """The store at `url`, its tables created if missing (and a SQLite file's directory);
    ValueError for a URL `check_store_url` rejects, StoreError when the store fails."""
    check_store_url(url)
    store: SqliteStore | PostgresStore
    if url.startswith(SQLITE_PREFIX):
        path = sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(path)
    else:
        store = PostgresStore(url)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
