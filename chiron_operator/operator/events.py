"""Events that answer "why did (or didn't) it scale?" at the moment it matters.

Enforce: one Normal Event per applied change, with the controller's reason and numbers.
Recommend: one Event per changed recommendation. Observe: none (status only).
Any mode: a Warning when a conflict or a metrics outage begins, not on every tick of it (and
not while a new pool's pods wait for their first scrape, unless that outlasts its grace).
"""

from __future__ import annotations

import asyncio

from chiron_operator.api import ConditionType, Mode, PoolStatus
from chiron_operator.kube import EventType
from chiron_operator.operator.context import OperatorContext, PoolRef
from chiron_operator.operator.status import METRICS_PENDING, TickReport


def _is_true(status: PoolStatus, kind: ConditionType) -> bool:
    return any(c.type == kind.value and c.status == "True" for c in status.conditions)


def _is_false(status: PoolStatus, kind: ConditionType) -> bool:
    return any(c.type == kind.value and c.status == "False" for c in status.conditions)


def _message_of(status: PoolStatus, kind: ConditionType) -> str:
    return next((c.message for c in status.conditions if c.type == kind.value), "")


def events_for(
    report: TickReport, previous: PoolStatus, current: PoolStatus
) -> list[tuple[EventType, str, str]]:
    """(type, reason, message) of the Events this tick should post. Pure."""
    out: list[tuple[EventType, str, str]] = []
    for change in report.the_plan.changes:
        what = f"{change.role.value} {change.field.value} {change.from_value} -> {change.to_value}"
        text = f"{what}: {change.verdict.message}"
        if report.the_plan.acts and change not in report.unapplied:
            out.append((EventType.NORMAL, change.verdict.reason.value, text))
        elif report.mode is Mode.RECOMMEND and _new_recommendation(previous, current):
            out.append((EventType.NORMAL, "Recommendation", f"recommend {text}"))
    if _is_true(current, ConditionType.CONFLICT) and not _is_true(previous, ConditionType.CONFLICT):
        out.append((EventType.WARNING, "Conflict", _message_of(current, ConditionType.CONFLICT)))
    if _metrics_warned(current) and not _metrics_warned(previous):
        message = _message_of(current, ConditionType.METRICS_AVAILABLE)
        out.append((EventType.WARNING, "MetricsUnavailable", message))
    return out


def _metrics_warned(status: PoolStatus) -> bool:
    """MetricsAvailable is False for a reason worth a Warning (not the first-scrape wait)."""
    kind = ConditionType.METRICS_AVAILABLE.value
    return any(
        c.type == kind and c.status == "False" and c.reason != METRICS_PENDING
        for c in status.conditions
    )


def _new_recommendation(previous: PoolStatus, current: PoolStatus) -> bool:
    return previous.recommendations != current.recommendations


async def announce(
    ctx: OperatorContext,
    ref: PoolRef,
    report: TickReport,
    previous: PoolStatus,
    current: PoolStatus,
) -> None:
    """Post this tick's Events."""
    for event_type, reason, message in events_for(report, previous, current):
        await asyncio.to_thread(
            ctx.kube.post_event,
            ref.namespace,
            ref.name,
            ref.uid,
            reason=reason,
            message=message,
            event_type=event_type,
        )
