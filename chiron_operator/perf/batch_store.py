"""The stores the batch benchmark runs on, and the store's own cost per dispatched request.

- `kinds` and `StoreKind.fresh`: a fresh store URL per gateway run: a SQLite file in its own
  directory, and, when a PostgreSQL server is given, a new database on it, dropped afterwards,
  so no run sees another's rows.
- `store_calls_cpu_s`: the two statements the gateway runs per dispatched request (read its
  body, record its answer once), straight on the store in this process: their CPU time is the
  store's share of the gateway's work per request, without the hand-over to the store's thread.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg
from psycopg import sql

from chiron_operator.batches.jsonl import parse_input
from chiron_operator.batches.lines import output_line
from chiron_operator.batches.model import (
    BatchRecord,
    BatchStatus,
    RequestState,
    new_batch_id,
)
from chiron_operator.batches.store.url import open_store
from chiron_operator.perf.batch_load import ENDPOINT, input_file
from chiron_operator.perf.batch_upstream import COMPLETION_TOKENS, chat_answer

SQLITE: Final = "SQLite"
POSTGRES: Final = "PostgreSQL"
WINDOW_S: Final = 24 * 3600


@dataclass(frozen=True, slots=True)
class StoreKind:
    """Which database, and how to get a fresh one for each gateway run."""

    name: str  # SQLITE or POSTGRES
    server_url: str = ""  # PostgreSQL's server (its `postgres` database); unused for SQLite

    @contextlib.contextmanager
    def fresh(self, workdir: Path) -> Iterator[str]:
        """A store URL nothing has used yet, for as long as the context lasts."""
        if self.name == SQLITE:
            workdir.mkdir(parents=True, exist_ok=True)
            yield f"sqlite:///{workdir / 'batches.db'}"
            return
        name = f"chiron_bench_{secrets.token_hex(6)}"
        with psycopg.connect(self.server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield self.server_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with psycopg.connect(self.server_url, autocommit=True) as admin:
                # FORCE: a gateway stopped mid-transaction may still hold a session.
                drop = sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
                admin.execute(drop)


def describe_postgres(server_url: str) -> str:
    """The server's version and the settings that decide what a commit costs."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        shown: dict[str, str] = {}
        for name in ("server_version", "fsync", "synchronous_commit"):
            row = connection.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            shown[name] = str(row[0]) if row else "unknown"
    return (
        f"PostgreSQL {shown['server_version'].split()[0]}, fsync {shown['fsync']}, "
        f"synchronous_commit {shown['synchronous_commit']}"
    )


def kinds(postgres_url: str) -> tuple[StoreKind, ...]:
    """SQLite always; PostgreSQL too when a server is given."""
    found = [StoreKind(SQLITE)]
    if postgres_url:
        found.append(StoreKind(POSTGRES, postgres_url))
    return tuple(found)


def store_calls_cpu_s(url: str, lines: Sequence[str], model: str) -> float:
    """CPU seconds this thread spends on `request_body` then `record_result` of every line of
    a batch in progress in the store at `url` (its rows inserted first, not timed)."""
    store = open_store(url)
    try:
        requests = parse_input(input_file(lines), max_requests=len(lines))
        now = int(time.time())
        batch_id = new_batch_id()
        record = BatchRecord(
            batch_id, "file-bench", ENDPOINT, "24h", BatchStatus.VALIDATING, now, now + WINDOW_S
        )
        store.put_batch(record)
        store.start_batch(batch_id, requests, now)
        # The answers' lines are built before the clock starts: making them is not the store's
        # work (the gateway makes them on its event loop).
        answer = json.loads(chat_answer(model))
        results = [output_line(r.custom_id, 200, answer) for r in requests]
        started_s = time.thread_time()
        for request, line in zip(requests, results, strict=True):
            store.request_body(batch_id, request.line_no)
            store.record_result(
                batch_id, request.line_no, RequestState.DONE, line, COMPLETION_TOKENS
            )
        return time.thread_time() - started_s
    finally:
        store.close()
