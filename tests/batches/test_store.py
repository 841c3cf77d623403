"""The batch store's contract, on SQLite and on a real PostgreSQL server alike: files, batches,
request rows answered exactly once, finalized output files, the dispatcher lock, durability."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from chiron_operator.batches.model import (
    BatchRecord,
    BatchStatus,
    FileKind,
    FileRecord,
    InputRequest,
    RequestCounts,
    RequestState,
    error_file_id,
    new_batch_id,
    new_file_id,
    output_file_id,
)
from chiron_operator.batches.store.base import Store, StoreError
from chiron_operator.batches.store.postgres import PostgresStore
from chiron_operator.batches.store.sql import CHUNK_BYTES, LINES_PER_CHUNK
from chiron_operator.batches.store.threaded import AsyncStore
from chiron_operator.batches.store.url import check_store_url, mask_url, open_store

NOW = 1_700_000_000
WINDOW_S = 3600
VALIDATING = frozenset({BatchStatus.VALIDATING})
RUNNING = frozenset({BatchStatus.IN_PROGRESS})


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store/batches.db"
    url: str = request.getfixturevalue("pg_database_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def upload(store: Store, content: bytes, purpose: str = "batch") -> FileRecord:
    record = FileRecord(new_file_id(), purpose, "in.jsonl", len(content), NOW)
    store.put_file(record, content)
    return record


def new_batch(store: Store, created_at: int = NOW) -> BatchRecord:
    record = BatchRecord(
        id=new_batch_id(),
        input_file_id="file-x",
        endpoint="/v1/chat/completions",
        completion_window="1h",
        status=BatchStatus.VALIDATING,
        created_at=created_at,
        expires_at=created_at + WINDOW_S,
        metadata={"team": "search"},
    )
    store.put_batch(record)
    return record


def requests(count: int) -> list[InputRequest]:
    return [
        InputRequest(n, f"req-{n}", "/v1/chat/completions", "m", f'{{"n": {n}}}', 10 * n or None)
        for n in range(1, count + 1)
    ]


def started(store: Store, count: int) -> BatchRecord:
    record = new_batch(store)
    assert store.start_batch(record.id, requests(count), NOW + 1)
    return record


def content_of(store: Store, file_id: str) -> bytes:
    chunks = store.file_chunks(file_id)
    assert chunks is not None
    return b"".join(chunks)


# Files ----------------------------------------------------------------------------------------


def test_file_round_trip_in_chunks_and_delete(store: Store) -> None:
    content = bytes(range(256)) * (CHUNK_BYTES * 5 // 2 // 256)  # two and a half chunks
    record = upload(store, content)
    assert store.get_file(record.id) == record
    chunks = store.file_chunks(record.id)
    assert chunks is not None
    sizes = [len(chunk) for chunk in chunks]
    assert sizes == [CHUNK_BYTES, CHUNK_BYTES, CHUNK_BYTES // 2]
    assert content_of(store, record.id) == content
    assert store.delete_file(record.id)
    assert store.get_file(record.id) is None
    assert store.file_chunks(record.id) is None
    assert not store.delete_file(record.id)


def test_empty_upload_has_no_chunks(store: Store) -> None:
    record = upload(store, b"")
    assert content_of(store, record.id) == b""


def test_files_list_newest_first_in_pages(store: Store) -> None:
    ids = [upload(store, b"x", purpose="batch" if i % 2 else "other").id for i in range(5)]
    page, more = store.list_files(None, None, 2)
    assert ([f.id for f in page], more) == ([ids[4], ids[3]], True)
    page, more = store.list_files(None, ids[3], 2)
    assert ([f.id for f in page], more) == ([ids[2], ids[1]], True)
    page, more = store.list_files(None, ids[1], 2)
    assert ([f.id for f in page], more) == ([ids[0]], False)
    page, more = store.list_files("batch", None, 10)
    assert ([f.id for f in page], more) == ([ids[3], ids[1]], False)
    assert store.list_files(None, "file-unknown", 10) == ([], False)


# Batches --------------------------------------------------------------------------------------


def test_batches_round_trip_and_list_newest_first(store: Store) -> None:
    batches = [new_batch(store) for _ in range(5)]  # all in the same second
    assert store.get_batch(batches[0].id) == batches[0]
    assert store.get_batch("batch_unknown") is None
    page, more = store.list_batches(None, 3)
    assert ([b.id for b in page], more) == ([b.id for b in batches[:1:-1]], True)
    page, more = store.list_batches(page[-1].id, 3)
    assert ([b.id for b in page], more) == ([batches[1].id, batches[0].id], False)
    oldest_first = store.batches_in(VALIDATING)
    assert [b.id for b in oldest_first] == [b.id for b in batches]
    assert store.batches_in(RUNNING) == []


def test_start_batch_inserts_rows_and_starts_once(store: Store) -> None:
    record = new_batch(store)
    assert store.request_counts(record.id) == RequestCounts()
    assert store.start_batch(record.id, requests(3), NOW + 5)
    started_record = store.get_batch(record.id)
    assert started_record is not None
    assert (started_record.status, started_record.in_progress_at) == (
        BatchStatus.IN_PROGRESS,
        NOW + 5,
    )
    assert not store.start_batch(record.id, requests(7), NOW + 6)
    assert store.request_counts(record.id) == RequestCounts(total=3)
    queued = store.queued_requests(record.id)
    assert [(q.line_no, q.custom_id, q.max_tokens, q.attempts) for q in queued] == [
        (1, "req-1", 10, 0),
        (2, "req-2", 20, 0),
        (3, "req-3", 30, 0),
    ]
    assert {q.deadline_s for q in queued} == {float(record.expires_at)}
    assert store.request_body(record.id, 2) == '{"n": 2}'
    with pytest.raises(KeyError):
        store.request_body(record.id, 9)


def test_transition_only_from_expected_statuses(store: Store) -> None:
    record = new_batch(store)
    assert not store.transition(record.id, BatchStatus.FINALIZING, NOW, expect=RUNNING)
    errors: list[dict[str, object]] = [{"code": "invalid_json", "line": 2, "message": "bad"}]
    assert store.transition(
        record.id, BatchStatus.FAILED, NOW + 9, expect=VALIDATING, errors=errors
    )
    failed = store.get_batch(record.id)
    assert failed is not None
    assert (failed.status, failed.failed_at, failed.errors) == (BatchStatus.FAILED, NOW + 9, errors)
    assert not store.transition(record.id, BatchStatus.CANCELLING, NOW, expect=VALIDATING)
    assert not store.transition("batch_unknown", BatchStatus.FAILED, NOW, expect=VALIDATING)


# Requests -------------------------------------------------------------------------------------


def test_result_recorded_exactly_once_and_attempts_counted(store: Store) -> None:
    record = started(store, 3)
    assert store.record_attempt(record.id, 1) == 1
    assert store.record_attempt(record.id, 1) == 2
    assert store.record_result(record.id, 1, RequestState.DONE, '{"first": 1}\n', 5)
    assert not store.record_result(record.id, 1, RequestState.FAILED, '{"second": 1}')
    assert store.record_attempt(record.id, 1) == 2  # answered: no more attempts counted
    assert store.record_result(record.id, 2, RequestState.FAILED, '{"error": 2}')
    assert store.request_counts(record.id) == RequestCounts(total=3, completed=1, failed=1)
    assert [q.line_no for q in store.queued_requests(record.id)] == [3]
    with pytest.raises(KeyError):
        store.record_attempt(record.id, 9)
    with pytest.raises(ValueError, match="queued"):
        store.record_result(record.id, 3, RequestState.QUEUED, "{}")


def test_fail_queued_fails_only_unanswered_rows(store: Store) -> None:
    record = started(store, 5)
    store.record_result(record.id, 2, RequestState.DONE, '{"ok": 2}')
    assert store.fail_queued(record.id, lambda custom_id: f'{{"expired": "{custom_id}"}}') == 4
    assert store.fail_queued(record.id, lambda custom_id: "{}") == 0
    assert store.request_counts(record.id) == RequestCounts(total=5, completed=1, failed=4)
    assert store.queued_requests(record.id) == []
    assert not store.record_result(record.id, 3, RequestState.DONE, '{"late": 3}')


def test_finalize_writes_output_and_error_files_once(store: Store) -> None:
    count = LINES_PER_CHUNK + 5  # the output spans two chunks
    record = started(store, count)
    for n in range(count, 0, -1):  # answered out of order, listed in line order
        state = RequestState.FAILED if n % 10 == 0 else RequestState.DONE
        store.record_result(record.id, n, state, f'{{"line": {n}, "text": "é"}}')
    store.transition(record.id, BatchStatus.FINALIZING, NOW + 2, expect=RUNNING)
    done = store.finalize(
        record.id, BatchStatus.COMPLETED, NOW + 3, expect=frozenset({BatchStatus.FINALIZING})
    )
    assert done is not None
    assert (done.status, done.completed_at) == (BatchStatus.COMPLETED, NOW + 3)
    assert (done.output_file_id, done.error_file_id) == (
        output_file_id(record.id),
        error_file_id(record.id),
    )
    for file_id, kind, lines in (
        (output_file_id(record.id), FileKind.OUTPUT, [n for n in range(1, count + 1) if n % 10]),
        (error_file_id(record.id), FileKind.ERROR, list(range(10, count + 1, 10))),
    ):
        file = store.get_file(file_id)
        assert file is not None
        content = content_of(store, file_id)
        expected = "".join(f'{{"line": {n}, "text": "é"}}\n' for n in lines).encode()
        assert (file.kind, file.batch_id, file.purpose) == (kind, record.id, "batch_output")
        assert (content, file.bytes) == (expected, len(expected))
    again = store.finalize(record.id, BatchStatus.COMPLETED, NOW + 4, expect=RUNNING)
    assert again is None
    assert store.get_batch(record.id) == done


def test_finalize_makes_no_file_without_lines(store: Store) -> None:
    record = started(store, 2)
    store.record_result(record.id, 1, RequestState.DONE, '{"ok": 1}')
    store.record_result(record.id, 2, RequestState.DONE, '{"ok": 2}')
    done = store.finalize(record.id, BatchStatus.COMPLETED, NOW, expect=RUNNING)
    assert done is not None
    assert (done.output_file_id, done.error_file_id) == (output_file_id(record.id), None)
    assert store.get_file(error_file_id(record.id)) is None
    empty = new_batch(store)
    cancelled = store.finalize(empty.id, BatchStatus.CANCELLED, NOW, expect=VALIDATING)
    assert cancelled is not None
    assert (cancelled.output_file_id, cancelled.error_file_id) == (None, None)


def test_output_stats_of_the_most_recent_rows(store: Store) -> None:
    assert store.output_stats(10).count == 0
    assert math.isnan(store.output_stats(10).mean_tokens)
    record = started(store, 6)
    for n, tokens in ((4, 10), (1, 20), (6, None), (3, 30), (2, 40)):
        store.record_result(record.id, n, RequestState.DONE, "{}", tokens)
    store.record_result(record.id, 5, RequestState.FAILED, "{}", 1000)
    recent = store.output_stats(2)
    assert (recent.count, recent.mean_tokens, recent.std_tokens) == (2, 35.0, 5.0)
    everything = store.output_stats(100)
    assert (everything.count, everything.mean_tokens) == (4, 25.0)
    assert everything.std_tokens == pytest.approx(math.sqrt(125.0))


# The dispatcher lock --------------------------------------------------------------------------


def test_one_leader_and_the_other_takes_over_after_release(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)
    try:
        lead, standby = first.leadership("pool-a"), second.leadership("pool-a")
        other_pool = second.leadership("pool-b")
        assert lead.try_acquire() and lead.try_acquire()
        assert not standby.try_acquire()
        assert other_pool.try_acquire()
        assert lead.still_held() and not standby.still_held()
        lead.release()
        assert not lead.still_held()
        assert standby.try_acquire() and standby.still_held()
        standby.release()
        other_pool.release()
    finally:
        first.close()
        second.close()


def test_postgres_lock_goes_with_its_session(pg_database_url: str) -> None:
    first, second = open_store(pg_database_url), open_store(pg_database_url)
    try:
        lead, standby = first.leadership("pool"), second.leadership("pool")
        assert lead.try_acquire()
        assert not standby.try_acquire()
        with psycopg.connect(pg_database_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
        assert killed == [(True,)]
        deadline = time.monotonic() + 10
        while not standby.try_acquire():
            assert time.monotonic() < deadline, "the killed session's lock was not freed"
            time.sleep(0.05)
        assert not lead.still_held()
        assert not lead.try_acquire()
        standby.release()
        lead.release()
    finally:
        first.close()
        second.close()


def test_postgres_store_reconnects_once_after_losing_its_connection(pg_database_url: str) -> None:
    store = open_store(pg_database_url)
    try:
        record = new_batch(store)
        with psycopg.connect(pg_database_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            ).fetchall()
            assert killed == [(True,)]
        assert store.get_batch(record.id) == record
    finally:
        store.close()
    broken = PostgresStore("postgresql://chiron@127.0.0.1:1/none")
    with pytest.raises(StoreError, match=r"127\.0\.0\.1"):
        broken.get_batch("batch_x")


# Durability -----------------------------------------------------------------------------------

CHILD = """
import sys
from chiron_operator.batches.model import BatchRecord, BatchStatus, InputRequest, RequestState
from chiron_operator.batches.store.url import open_store

store = open_store(sys.argv[1])
batch = BatchRecord("batch_killed", "file-x", "/v1/completions", "1h", BatchStatus.VALIDATING,
                    1, 3601)
store.put_batch(batch)
rows = [InputRequest(n, f"c{n}", "/v1/completions", "m", "{}") for n in (1, 2, 3)]
store.start_batch(batch.id, rows, 2)
store.record_result(batch.id, 1, RequestState.DONE, '{"one": 1}', 7)
store.record_result(batch.id, 2, RequestState.FAILED, '{"two": 2}')
print("recorded", flush=True)
sys.stdin.read()
"""


def test_sqlite_results_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/killed.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "recorded"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    store = open_store(url)
    try:
        assert store.request_counts("batch_killed") == RequestCounts(3, 1, 1)
        assert [q.line_no for q in store.queued_requests("batch_killed")] == [3]
        assert store.output_stats(10).mean_tokens == 7.0
    finally:
        store.close()


# The asyncio face and URLs --------------------------------------------------------------------


async def test_async_store_runs_calls_on_its_worker(store: Store) -> None:
    wrapped = AsyncStore(store)
    record = FileRecord(new_file_id(), "batch", "a.jsonl", 3 * CHUNK_BYTES, NOW)
    content = b"a" * CHUNK_BYTES + b"b" * CHUNK_BYTES + b"c" * CHUNK_BYTES
    await wrapped.put_file(record, content)
    assert await wrapped.get_file(record.id) == record
    chunks = [chunk async for chunk in wrapped.file_chunks(record.id)]
    assert [chunk[:1] for chunk in chunks] == [b"a", b"b", b"c"]
    assert [chunk async for chunk in wrapped.file_chunks("file-unknown")] == []
    batch = new_batch(store)
    assert await wrapped.start_batch(batch.id, requests(2), NOW)
    assert await wrapped.record_result(batch.id, 1, RequestState.DONE, "{}", 3)
    assert await wrapped.request_counts(batch.id) == RequestCounts(2, 1, 0)
    assert wrapped.url == store.url
    await wrapped.close()


def test_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///data/nested/b.db")
    relative.close()
    assert (tmp_path / "data" / "nested" / "b.db").exists()
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert absolute.url == f"sqlite:///{tmp_path}/abs.db"
    absolute.close()
    for bad in ("mysql://u@h/db", "sqlite:///", "sqlite:///:memory:", "/tmp/x.db"):
        with pytest.raises(ValueError, match="sqlite:///"):
            check_store_url(bad)
        with pytest.raises(ValueError):
            open_store(bad)
    check_store_url("postgres://u:p@h/db")
    assert mask_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("postgresql://h/db?password=secret&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require"
    )
    assert mask_url(f"sqlite:///{tmp_path}/abs.db") == f"sqlite:///{tmp_path}/abs.db"
