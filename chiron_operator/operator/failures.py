"""A failed tick, told once: a reason users can act on, a condition, and a log line per change.

A tick that fails fails again the next interval, usually for the same cause: an API server
answering 503, a Role that lacks a verb, a bug. Logging its traceback, rewriting status and
posting an Event on every one of those ticks buries the cause in noise, for every tenant the
operator serves. So the failure is reduced to a `TickProblem` (a reason and a one-line
message, never a traceback), which status shows in the `Reconciled` condition; the Event and
the traceback come when the problem changes, not every tick it lasts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from chiron_operator.api.status import Condition, ConditionType
from chiron_operator.kube import KubeApiError
from chiron_operator.operator.status import condition

log = logging.getLogger(__name__)

# Plain assignments, not Final: the guides' test reads the condition reasons from them.
TICK_SUCCEEDED = "TickSucceeded"
TICK_FAILED = "TickFailed"
API_SERVER_ERROR = "ApiServerError"
API_UNREACHABLE = "ApiUnreachable"
API_CONFLICT = "ApiConflict"
API_INVALID_RESPONSE = "ApiInvalidResponse"
API_REQUEST_REJECTED = "ApiRequestRejected"
MAX_MESSAGE: Final = 400
_NUMBERS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class TickProblem:
    """Why a tick did not complete, in one line: `reason` is a condition reason."""

    reason: str
    message: str

    @property
    def signature(self) -> str:
        """What makes two failures "the same": reason and message, numbers aside (a
        resourceVersion or a count in the message must not make every tick news)."""
        return f"{self.reason}|{_NUMBERS.sub('#', self.message)}"


def same_cause(first: Condition, second: Condition) -> bool:
    """Whether two conditions say the same, numbers in their messages aside."""
    return (first.status, first.reason, _NUMBERS.sub("#", first.message)) == (
        second.status,
        second.reason,
        _NUMBERS.sub("#", second.message),
    )


def _one_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= MAX_MESSAGE else first[: MAX_MESSAGE - 3] + "..."


def api_reason(exc: KubeApiError) -> str:
    """The condition reason for an API error, by what a user does about it."""
    if exc.invalid_response:
        return API_INVALID_RESPONSE
    if exc.status == 0:
        return API_UNREACHABLE
    if exc.conflict:
        return API_CONFLICT
    if exc.status >= 500:
        return API_SERVER_ERROR
    return API_REQUEST_REJECTED


def problem_of(exc: BaseException, context: str = "") -> TickProblem:
    """The problem an exception out of a tick is: the API's reason, or TickFailed with the
    exception's type (the traceback goes to the log, once)."""
    where = f"{context}: " if context else ""
    if isinstance(exc, KubeApiError):
        return TickProblem(api_reason(exc), _one_line(f"{where}{exc}"))
    return TickProblem(TICK_FAILED, _one_line(f"{where}{type(exc).__name__}: {exc}"))


def reconciled(problem: TickProblem | None, *, now: datetime, generation: int) -> Condition:
    """The `Reconciled` condition: True after a whole tick, else the problem, retried."""
    if problem is None:
        message = "the last tick ran to its end"
        return condition(
            ConditionType.RECONCILED, True, TICK_SUCCEEDED, message, now=now, generation=generation
        )
    message = f"{problem.message} (retried every control interval)"
    return condition(
        ConditionType.RECONCILED,
        False,
        _documented(problem.reason),
        message,
        now=now,
        generation=generation,
    )


def _documented(reason: str) -> str:
    """`reason` as one of the reasons the guides document (any other reads as TickFailed)."""
    if reason == API_SERVER_ERROR:
        return API_SERVER_ERROR
    if reason == API_UNREACHABLE:
        return API_UNREACHABLE
    if reason == API_CONFLICT:
        return API_CONFLICT
    if reason == API_INVALID_RESPONSE:
        return API_INVALID_RESPONSE
    if reason == API_REQUEST_REJECTED:
        return API_REQUEST_REJECTED
    return TICK_FAILED


class FailureLog:
    """One pool's log of tick failures: the traceback when the problem changes, not per tick."""

    def __init__(self, pool: str) -> None:
        self._pool = pool
        self._last: TickProblem | None = None

    def failed(self, problem: TickProblem, exc: BaseException | None = None) -> bool:
        """Log a failure when its cause is new (with the traceback of an unexpected one), else
        only at debug level; whether it was new."""
        if self._last is not None and self._last.signature == problem.signature:
            log.debug("pool %s: tick failed again: %s", self._pool, problem.message)
            return False
        self._last = problem
        level = logging.ERROR if problem.reason == TICK_FAILED else logging.WARNING
        log.log(
            level,
            "pool %s: tick failed (%s): %s; logged again only when the cause changes",
            self._pool,
            problem.reason,
            problem.message,
            exc_info=exc if problem.reason == TICK_FAILED else None,
        )
        return True

    def succeeded(self) -> None:
        """A tick completed: say so once after failures."""
        if self._last is not None:
            log.info("pool %s: ticks complete again (was: %s)", self._pool, self._last.message)
        self._last = None
