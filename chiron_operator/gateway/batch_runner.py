"""The Batch API's dispatcher: batches from the store through the routing core, answered once.

One gateway replica holds the store's dispatcher lock (`Store.leadership`) and runs this loop;
the others wait for the lock. Every `poll_s` the holder:

- validates new batches (their lines against the endpoint and the models the pool serves) and
  moves them to `in_progress`, or to `failed` with errors naming the lines;
- loads the queued rows of batches in progress into the router as one group each, with the
  batch's expiry as the group's deadline: earliest deadline first across groups, input order
  within one; the router fills batch pods, then spare mixed slots, within every pod's cap;
- expires batches whose window ended (what ran is kept; what did not gets a `batch_expired`
  line), and finishes cancelled ones.

A row is `queued` until it is answered for good, so a crash or a lost lock loses nothing: the
next holder loads what is still queued. Answers go through `record_result`, which writes a row
once, so nothing is answered twice either. `batch_work.BatchWork` runs each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from chiron_operator.batches.jsonl import (
    MAX_REPORTED_ERRORS as MAX_ERRORS,
)
from chiron_operator.batches.jsonl import (
    InputFileError,
    LineError,
    check_batch_lines,
    parse_input,
)
from chiron_operator.batches.lines import error_line, expired_line
from chiron_operator.batches.model import (
    BatchRecord,
    BatchStatus,
    InputRequest,
    estimate_output_tokens,
)
from chiron_operator.batches.store.base import Leadership, StoreError
from chiron_operator.batches.store.threaded import AsyncStore
from chiron_operator.core.enums import RequestClass
from chiron_operator.gateway.batch_work import BatchWork, Row, WorkSettings
from chiron_operator.gateway.dispatcher import Dispatcher
from chiron_operator.gateway.models import ModelCatalog
from chiron_operator.routing import Ticket

log = logging.getLogger(__name__)

ACTIVE = frozenset({BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING})
CANCELLED_CODE = "batch_cancelled"


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """How the dispatcher loop runs."""

    poll_s: float = 1.0
    lock_name: str = "chiron-batches"
    max_requests: int = 100_000
    work: WorkSettings = field(default_factory=WorkSettings)


class BatchRunner:
    """Dispatches the store's batches while this replica holds the dispatcher lock."""

    def __init__(
        self,
        store: AsyncStore,
        dispatcher: Dispatcher,
        session: Callable[[], aiohttp.ClientSession],
        settings: RunnerSettings,
        *,
        models: ModelCatalog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.models = models
        self.clock = clock
        self.work = BatchWork(store, dispatcher, session, settings.work, self._finished)
        self.leading = False
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Something changed in the store here (a new batch, a cancel): look now, not at the
        next poll (other replicas' changes wait for the poll)."""
        self._wake.set()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)
        self._wake.clear()

    async def run(self) -> None:
        """Wait for the lock, dispatch while holding it, and start over when it is lost."""
        leadership = await asyncio.to_thread(self.store.leadership, self.settings.lock_name)
        try:
            while True:
                if await asyncio.to_thread(leadership.try_acquire):
                    await self._lead(leadership)
                await asyncio.sleep(self.settings.poll_s)
        finally:
            self.work.drop_all()
            self.leading = False
            await asyncio.to_thread(leadership.release)

    async def _lead(self, leadership: Leadership) -> None:
        log.info("this gateway dispatches the batch queue (%s)", self.store.url)
        self.leading = True
        stats = await self.store.output_stats(1000)
        if stats.count:
            self.dispatcher.learn_batch_outputs(stats.count, stats.count * stats.mean_tokens)
        try:
            while await asyncio.to_thread(leadership.still_held):
                try:
                    await self.sync()
                except StoreError as exc:
                    log.warning("batch store failed (%s); trying again", exc)
                await self._pause()
        finally:
            log.warning("this gateway no longer dispatches the batch queue")
            self.leading = False
            self.work.drop_all()

    async def sync(self) -> None:
        """One pass over the store: validate, load, expire, cancel and finish batches."""
        for record in await self.store.batches_in(frozenset({BatchStatus.VALIDATING})):
            await self._validate(record)
        now = self.clock()
        for record in await self.store.batches_in(ACTIVE):
            if record.status is BatchStatus.CANCELLING:
                await self._end(record, BatchStatus.CANCELLED, _cancelled_line)
            elif record.status is BatchStatus.FINALIZING:
                await self._finalize(record.id, BatchStatus.COMPLETED, BatchStatus.FINALIZING)
            elif record.expires_at <= now:
                await self._end(record, BatchStatus.EXPIRED, expired_line)
            elif record.id not in self.work.batches:
                await self._load(record)

    async def _validate(self, record: BatchRecord) -> None:
        """Queue a new batch's requests, or fail it with errors naming the lines at fault."""
        errors, requests = await self._check(record)
        now = int(self.clock())
        if errors:
            data: list[dict[str, object]] = [e.to_openai() for e in errors[:MAX_ERRORS]]
            validating = frozenset({BatchStatus.VALIDATING})
            await self.store.transition(
                record.id, BatchStatus.FAILED, now, expect=validating, errors=data
            )
            log.info("batch %s failed validation: %s", record.id, errors[0])
        elif await self.store.start_batch(record.id, requests, now):
            log.info("batch %s: %d requests queued", record.id, len(requests))

    async def _check(self, record: BatchRecord) -> tuple[list[LineError], list[InputRequest]]:
        chunks = self.store.file_chunks(record.input_file_id)
        content = b"".join([chunk async for chunk in chunks])
        if not content:
            gone = LineError(None, "file_not_found", "the input file is gone", "input_file_id")
            return [gone], []
        try:
            requests = await asyncio.to_thread(
                parse_input, content, max_requests=self.settings.max_requests
            )
        except InputFileError as exc:  # a limit lowered since the upload
            return exc.errors, []
        return check_batch_lines(requests, record.endpoint, await self.models.names()), requests

    async def _load(self, record: BatchRecord) -> None:
        rows = await self.store.queued_requests(record.id)
        if not rows:
            await self._complete(record.id)
            return
        mean = self.dispatcher.batch_output_mean_tokens
        tickets = []
        for row in rows:
            ticket = Ticket(
                f"{record.id}#{row.line_no}",
                RequestClass.BATCH,
                float(record.created_at),
                float(record.expires_at),
                group=record.id,
                cost_tokens=estimate_output_tokens(row.max_tokens, mean),
            )
            tickets.append((ticket, Row(record.id, record.endpoint, row.line_no, row.custom_id)))
        self.work.load(record.id, tickets)

    def _finished(self, batch_id: str) -> None:
        """Every loaded row of a batch is answered: finish it (outside the caller's stack)."""
        asyncio.get_running_loop().create_task(self._complete(batch_id))

    async def _complete(self, batch_id: str) -> None:
        now = int(self.clock())
        running = frozenset({BatchStatus.IN_PROGRESS})
        if await self.store.transition(batch_id, BatchStatus.FINALIZING, now, expect=running):
            await self._finalize(batch_id, BatchStatus.COMPLETED, BatchStatus.FINALIZING)

    async def _end(
        self, record: BatchRecord, to: BatchStatus, line_for: Callable[[str], str]
    ) -> None:
        """Expire or cancel: stop its requests; those that never ran get an error line."""
        self.work.drop(record.id)
        failed = await self.store.fail_queued(record.id, line_for)
        log.info("batch %s %s; %d requests did not run", record.id, to.value, failed)
        await self._finalize(record.id, to, record.status)

    async def _finalize(self, batch_id: str, to: BatchStatus, since: BatchStatus) -> None:
        done = await self.store.finalize(batch_id, to, int(self.clock()), expect=frozenset({since}))
        self.work.forget(batch_id)
        if done is not None:
            log.info("batch %s %s", batch_id, to.value)


def _cancelled_line(custom_id: str) -> str:
    return error_line(custom_id, CANCELLED_CODE, "the batch was cancelled before this request ran")
