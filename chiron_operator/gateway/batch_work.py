"""The requests of the batches being dispatched: sent when the router says, answered once.

Each loaded row is a ticket in the router (no task, no body in memory: a 50,000-request batch
costs its tickets only). When the router sends one, its body is read from the store and it runs
upstream; a completion or a final error is written once (`Store.record_result`); no answer, or
overload, is tried again after a backoff, at most `max_attempts` times, then written to the error
file with the reason. A request cut off for interactive work is queued again by the router in
its place and sent again later, at no attempt's cost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp

from chiron_operator.batches.lines import error_line, output_line, output_tokens
from chiron_operator.batches.model import RequestState
from chiron_operator.batches.store.base import StoreError
from chiron_operator.batches.store.threaded import AsyncStore
from chiron_operator.gateway.batch_upstream import Answer, Verdict, call, upstream_payload
from chiron_operator.gateway.dispatcher import CutOffError, Dispatcher, Pending
from chiron_operator.routing import Ticket

log = logging.getLogger(__name__)

RECORD_TRIES = 5


@dataclass(frozen=True, slots=True)
class WorkSettings:
    """How batch requests are tried."""

    max_attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    eject_s: float = 2.0
    request_timeout_s: float = 600.0


@dataclass(frozen=True, slots=True)
class Row:
    """Which request of which batch a ticket is."""

    batch_id: str
    endpoint: str
    line_no: int
    custom_id: str


@dataclass(eq=False)
class LoadedBatch:
    """A batch's requests in the router: queued, in flight or backing off."""

    pending: dict[int, Pending] = field(default_factory=dict)
    left: int = 0


class BatchWork:
    """The batch requests this replica dispatches."""

    def __init__(
        self,
        store: AsyncStore,
        dispatcher: Dispatcher,
        session: Callable[[], aiohttp.ClientSession],
        settings: WorkSettings,
        on_batch_done: Callable[[str], None],
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.session = session
        self.settings = settings
        self.on_batch_done = on_batch_done
        self.batches: dict[str, LoadedBatch] = {}
        self.rows: dict[Ticket, Row] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def load(self, batch_id: str, tickets: Iterable[tuple[Ticket, Row]]) -> None:
        loaded = self.batches[batch_id] = LoadedBatch()
        for ticket, row in tickets:
            self.rows[ticket] = row
            loaded.left += 1
            loaded.pending[row.line_no] = self.dispatcher.open(ticket, self._sent)

    def drop(self, batch_id: str) -> None:
        """Stop a batch's requests (it expired or was cancelled): forget them, close their
        upstream connections (vLLM aborts them)."""
        loaded = self.batches.pop(batch_id, None)
        if loaded is None:
            return
        self.dispatcher.abandon_many(loaded.pending.values())
        for pending in loaded.pending.values():
            self.rows.pop(pending.ticket, None)

    def forget(self, batch_id: str) -> None:
        self.batches.pop(batch_id, None)

    def drop_all(self) -> None:
        """This replica no longer dispatches: let go of everything (the next one reloads it)."""
        for batch_id in list(self.batches):
            self.drop(batch_id)
        for task in self.tasks:
            task.cancel()

    def _sent(self, pending: Pending) -> None:
        task = asyncio.get_running_loop().create_task(self._run(pending))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, pending: Pending) -> None:
        row = self.rows.get(pending.ticket)
        pod = self.dispatcher.pods.get(pending.pod or "")
        if row is None or pod is None:
            return
        try:
            body = await self.store.request_body(row.batch_id, row.line_no)
            work = call(
                self.session(),
                pod,
                row.endpoint,
                upstream_payload(body),
                self.settings.request_timeout_s,
                on_first_token=lambda: self.dispatcher.started(pending),
            )
            answer = await self.dispatcher.attempt(pending, work)
        except CutOffError:
            return  # queued again in its place by the router; sent again later
        except asyncio.CancelledError:
            if pending.done:
                return  # dropped with its batch, or this replica stopped dispatching
            raise
        except StoreError as exc:
            answer = Answer(None, None, f"batch store: {exc}")
        await self._settle(pending, row, pod.name, answer)

    async def _settle(self, pending: Pending, row: Row, pod: str, answer: Answer) -> None:
        verdict = answer.verdict
        if verdict is Verdict.RETRY and pod not in self.dispatcher.pods:
            # Its pod is gone (scaled in, evicted; it broke the connection or answered 503 while
            # shutting down): no fault of the request, so no attempt is spent and it goes back
            # to its place in its group, to run next on another pod.
            self.dispatcher.requeue(pending)
            return
        if verdict is Verdict.RETRY:
            if not answer.answered:
                self.dispatcher.eject(pod, self.settings.eject_s)
            attempts = await self.store.record_attempt(row.batch_id, row.line_no)
            if attempts < self.settings.max_attempts:
                await self._again(pending, row, attempts, answer)
                return
            message = f"gave up after {attempts} attempts: {answer.describe()}"
            line = error_line(row.custom_id, "upstream_unavailable", message, answer.status)
            state = RequestState.FAILED
        elif verdict is Verdict.DONE:
            line = output_line(row.custom_id, 200, answer.body)
            state = RequestState.DONE
        else:
            status = answer.status
            line = error_line(
                row.custom_id,
                "upstream_error",
                answer.describe(),
                status,
                _error_object(answer.body),
            )
            state = RequestState.FAILED
        self.dispatcher.finish(pending, "completed" if state is RequestState.DONE else "failed")
        self.rows.pop(pending.ticket, None)
        await self._record(row, state, line, output_tokens(answer.body))

    async def _again(self, pending: Pending, row: Row, attempts: int, answer: Answer) -> None:
        """Free the slot, wait out the backoff, queue it again in its group."""
        log.info(
            "%s line %d: %s; attempt %d again later",
            row.batch_id,
            row.line_no,
            answer.describe(),
            attempts + 1,
        )
        self.dispatcher.abandon(pending)
        ceiling = min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** (attempts - 1))
        await asyncio.sleep(ceiling * random.uniform(0.5, 1.0))
        loaded = self.batches.get(row.batch_id)
        if loaded is None or loaded.pending.get(row.line_no) is not pending:
            return  # the batch ended meanwhile
        old = pending.ticket
        self.rows.pop(old, None)
        ticket = Ticket(
            old.request_id,
            old.request_class,
            old.arrival_s,
            old.deadline_s,
            group=old.group,
            cost_tokens=old.cost_tokens,
        )
        ticket.retries = attempts
        self.rows[ticket] = row
        loaded.pending[row.line_no] = self.dispatcher.open(ticket, self._sent)

    async def _record(self, row: Row, state: RequestState, line: str, tokens: int | None) -> None:
        recorded = False
        for attempt in range(RECORD_TRIES):
            try:
                recorded = await self.store.record_result(
                    row.batch_id, row.line_no, state, line, tokens
                )
                break
            except StoreError as exc:
                log.error("%s line %d: result not stored (%s)", row.batch_id, row.line_no, exc)
                await asyncio.sleep(2.0**attempt)
        else:
            # The row is still queued in the store: drop the batch here so that the next pass
            # loads it again from the store and runs what is unanswered (once, in the output).
            self.drop(row.batch_id)
            return
        if recorded and state is RequestState.DONE and tokens is not None:
            self.dispatcher.note_batch_output(tokens)
        loaded = self.batches.get(row.batch_id)
        if loaded is None:
            return
        loaded.pending.pop(row.line_no, None)
        loaded.left -= 1
        if loaded.left == 0:
            self.on_batch_done(row.batch_id)


def _error_object(body: object) -> object:
    """The pod's own error object (`{"error": {...}}` or vLLM's `{"object": "error", ...}`)."""
    if isinstance(body, dict):
        inner = body.get("error")
        return inner if isinstance(inner, dict) else body
    return None
