"""The operator's log of failing Prometheus queries: once per change of error, per pool.

A tick fetches every interval (seconds): logging each failure would repeat the same line for as
long as an outage lasts and bury everything else. A failure is logged (WARNING) when it begins
or its error changes, with the pool and the failing query (the error text names it), and once
more (INFO) when the query answers again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chiron_operator.metrics import PoolMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FetchErrors:
    """What failed in one fetch: the pod signals (the whole fetch) and the batch queue."""

    signals: str = ""
    queue: str = ""

    @classmethod
    def of(cls, metrics: PoolMetrics) -> FetchErrors:
        return cls(metrics.error, metrics.queue.error if metrics.queue else "")


def error_lines(previous: FetchErrors, current: FetchErrors) -> list[tuple[int, str]]:
    """(level, message) of the log lines a change from `previous` to `current` is worth. Pure.

    The errors name their query (`running query failed: HTTP 401`), as status shows them.
    """
    lines: list[tuple[int, str]] = []
    for consequence, recovered, before, now in (
        ("every role holds", "metrics fetch works again", previous.signals, current.signals),
        ("the batch role holds", "batch queue query answers again", previous.queue, current.queue),
    ):
        if now and now != before:
            lines.append((logging.WARNING, f"{now} ({consequence})"))
        elif before and not now:
            lines.append((logging.INFO, f"{recovered} (was: {before})"))
    return lines


def log_fetch_errors(
    known: dict[tuple[str, str], FetchErrors], pool: tuple[str, str], metrics: PoolMetrics
) -> None:
    """Log what changed in the pool's fetch errors since its last tick; remember the new ones."""
    current = FetchErrors.of(metrics)
    for level, message in error_lines(known.get(pool, FetchErrors()), current):
        log.log(level, "pool %s/%s: %s", pool[0], pool[1], message)
    known[pool] = current
