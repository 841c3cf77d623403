"""Failing Prometheus queries are logged once per change and shown in status and Events."""

from __future__ import annotations

import logging

import pytest

from chiron_operator.api import PoolStatus
from chiron_operator.metrics import PoolMetrics
from chiron_operator.metrics.results import QueueMetrics
from chiron_operator.operator.events import events_for
from chiron_operator.operator.metrics_log import FetchErrors, log_fetch_errors
from tests.operator.ticks import observe_pool

POOL = ("llm", "llama")
QUEUE_ERROR = "batch_queue query failed: HTTP 400: parse error at char 12"
RUNNING_ERROR = "running query failed: HTTP 401"


def _fetch(error: str = "", queue_error: str = "") -> PoolMetrics:
    return PoolMetrics(error=error, queue=QueueMetrics((), queue_error))


def _logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records]


def test_a_failing_query_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chiron_operator.operator.metrics_log")
    known: dict[tuple[str, str], FetchErrors] = {}
    ticks = [
        _fetch(),
        _fetch(RUNNING_ERROR),
        _fetch(RUNNING_ERROR),
        _fetch(RUNNING_ERROR, QUEUE_ERROR),
        _fetch("", QUEUE_ERROR),
        _fetch("", QUEUE_ERROR),
        _fetch(),
    ]
    for metrics in ticks:
        log_fetch_errors(known, POOL, metrics)
    assert _logged(caplog) == [
        (logging.WARNING, f"pool llm/llama: {RUNNING_ERROR} (every role holds)"),
        (logging.WARNING, f"pool llm/llama: {QUEUE_ERROR} (the batch role holds)"),
        (logging.INFO, f"pool llm/llama: metrics fetch works again (was: {RUNNING_ERROR})"),
        (logging.INFO, f"pool llm/llama: batch queue query answers again (was: {QUEUE_ERROR})"),
    ]


def test_errors_are_remembered_per_pool(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="chiron_operator.operator.metrics_log")
    known: dict[tuple[str, str], FetchErrors] = {}
    for pool in (POOL, ("llm", "other"), POOL):
        log_fetch_errors(known, pool, _fetch(RUNNING_ERROR))
    assert [m for _, m in _logged(caplog)] == [
        f"pool llm/llama: {RUNNING_ERROR} (every role holds)",
        f"pool llm/other: {RUNNING_ERROR} (every role holds)",
    ]


def test_a_failing_batch_queue_query_is_shown_and_warned_once() -> None:
    pool = observe_pool()
    pool.queue = QueueMetrics()
    pool.tick()
    pool.queue = QueueMetrics((), QUEUE_ERROR)
    warnings = []
    for _ in range(3):
        previous = PoolStatus.model_validate(pool.status)
        outcome = pool.tick()
        warnings += [
            (reason, message)
            for kind, reason, message in events_for(outcome.report, previous, outcome.status)
            if kind.value == "Warning"
        ]
    metrics = next(c for c in pool.status["conditions"] if c["type"] == "MetricsAvailable")
    assert (metrics["status"], metrics["reason"]) == ("False", "BatchQueueUnavailable")
    assert QUEUE_ERROR in metrics["message"]
    assert warnings == [("MetricsUnavailable", metrics["message"])]
    pool.queue = QueueMetrics()
    pool.tick()
    metrics = next(c for c in pool.status["conditions"] if c["type"] == "MetricsAvailable")
    assert (metrics["status"], metrics["reason"]) == ("True", "MetricsFresh")
