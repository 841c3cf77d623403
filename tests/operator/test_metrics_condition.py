"""MetricsAvailable: a new pool's first scrape is waited for quietly; an outage is announced once.

Pure: a TickReport in, the status conditions and the tick's Events out.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from chiron_operator.api.spec import Mode
from chiron_operator.api.status import ConditionType, PoolStatus
from chiron_operator.core.decision import PoolDecision
from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import PodSignals, PoolSnapshot, RoleSnapshot
from chiron_operator.core.state import ChironState
from chiron_operator.core.tuning import PoolTuning
from chiron_operator.kube import EventType
from chiron_operator.metrics import RoleFacts
from chiron_operator.operator.events import events_for
from chiron_operator.operator.plan import Plan
from chiron_operator.operator.status import METRICS_PENDING, TickReport, build_status

START = datetime(2026, 11, 24, tzinfo=UTC)
GRACE_S = 13.0
FACTS = {Role.MIXED: RoleFacts(1, 1, 0, 8)}


def report(*, ready: bool, age_s: float, error: str = "", after_s: float = 0.0) -> TickReport:
    pod = PodSignals("p-mixed-a-b", Role.MIXED, ready, 8, sample_age_s=age_s)
    snapshot = PoolSnapshot(
        0.0,
        {Role.MIXED: RoleSnapshot(Role.MIXED, 1, int(ready), int(not ready), 8, (pod,))},
        metrics_age_s=age_s if ready else math.inf,
        metrics_error=error,
    )
    return TickReport(
        snapshot=snapshot,
        decision=PoolDecision(0.0, {}, {}),
        facts=FACTS,
        the_plan=Plan((), True),
        new_records=(),
        state=ChironState(),
        tuning=PoolTuning(),
        mode=Mode.ENFORCE,
        metric_names=None,
        generation=1,
        history_limit=10,
        now=START + timedelta(seconds=after_s),
        first_scrape_grace_s=GRACE_S,
    )


def metrics(status: PoolStatus) -> tuple[str, str]:
    found = next(c for c in status.conditions if c.type == ConditionType.METRICS_AVAILABLE)
    return found.status.value, found.reason


def warnings(tick: TickReport, before: PoolStatus, after: PoolStatus) -> list[str]:
    return [r for t, r, _ in events_for(tick, before, after) if t is EventType.WARNING]


def test_starting_pods_are_not_a_metrics_problem() -> None:
    status = build_status(report(ready=False, age_s=math.inf), PoolStatus())
    assert metrics(status) == ("True", "MetricsFresh")


def test_ready_pods_wait_for_their_first_scrape_without_a_warning() -> None:
    fresh = build_status(report(ready=False, age_s=math.inf), PoolStatus())
    tick = report(ready=True, age_s=math.inf, after_s=1.0)
    pending = build_status(tick, fresh)
    assert metrics(pending) == ("False", METRICS_PENDING)
    assert warnings(tick, fresh, pending) == []
    scraped = build_status(report(ready=True, age_s=1.0, after_s=3.0), pending)
    assert metrics(scraped) == ("True", "MetricsFresh")


def test_a_first_scrape_that_never_comes_is_warned_about_once_after_the_grace() -> None:
    status = build_status(report(ready=False, age_s=math.inf), PoolStatus())
    seen = []
    for after_s in (1.0, 5.0, GRACE_S + 2.0, GRACE_S + 4.0):
        tick = report(ready=True, age_s=math.inf, after_s=after_s)
        new = build_status(tick, status)
        seen.append((metrics(new)[1], warnings(tick, status, new)))
        status = new
    assert seen == [
        (METRICS_PENDING, []),
        (METRICS_PENDING, []),
        ("MetricsStale", ["MetricsUnavailable"]),
        ("MetricsStale", []),
    ]


def test_an_outage_is_warned_about_at_once() -> None:
    fresh = build_status(report(ready=True, age_s=1.0), PoolStatus())
    tick = report(ready=True, age_s=math.inf, error="cannot connect", after_s=2.0)
    down = build_status(tick, fresh)
    assert metrics(down) == ("False", "MetricsStale")
    assert warnings(tick, fresh, down) == ["MetricsUnavailable"]
