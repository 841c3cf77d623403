"""Events that answer "why did (or didn't) it scale?" at the moment it matters.

Enforce: one Normal Event per applied change, with the controller's reason and numbers.
Recommend: one Event per changed recommendation. Observe: none (status only).
Any mode: a Warning when a conflict or a metrics outage begins, not on every tick of it (and
not while a new pool's pods wait for their first scrape, unless that outlasts its grace); a
Warning when ticks start failing or fail for another cause (`Reconciled`), a Normal Event when
they complete again; a Warning when pods find no node, and when that caps a role
(`Schedulable`).
"""

from __future__ import annotations

import asyncio
import re

from chiron_operator.api import ConditionType, Mode, PoolStatus
from chiron_operator.api.status import Condition
from chiron_operator.kube import EventType
from chiron_operator.operator.context import OperatorContext, PoolRef
from chiron_operator.operator.status import METRICS_PENDING, TickReport

_NUMBERS = re.compile(r"\d+")


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
    return out + condition_events(previous, current)


def _find(status: PoolStatus, kind: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == kind.value), None)


def _cause(found: Condition | None) -> tuple[str, str] | None:
    """A False condition's cause: its reason and message, numbers aside (a count of seconds or
    a resourceVersion changing every tick is the same cause). For `Schedulable`, the reason
    and the roles it names: the counts and waits in its message move while the cause stays."""
    if found is None or found.status != "False":
        return None
    if found.type == ConditionType.SCHEDULABLE.value:
        roles = sorted({part.split(":", 1)[0].strip() for part in found.message.split("; ")})
        return found.reason, ",".join(roles)
    return found.reason, _NUMBERS.sub("#", found.message)


def condition_events(previous: PoolStatus, current: PoolStatus) -> list[tuple[EventType, str, str]]:
    """Events for `Reconciled` and `Schedulable`: one per change of cause, never per tick."""
    out: list[tuple[EventType, str, str]] = []
    reconciled = _news(previous, current, ConditionType.RECONCILED)
    if reconciled is not None and reconciled[0]:
        out.append((EventType.WARNING, "TickFailed", reconciled[1]))
    elif reconciled is not None:
        out.append((EventType.NORMAL, "Reconciled", reconciled[1]))
    schedulable = _news(previous, current, ConditionType.SCHEDULABLE)
    if schedulable is not None and schedulable[0]:
        out.append((EventType.WARNING, "Unschedulable", schedulable[1]))
    elif schedulable is not None:
        out.append((EventType.NORMAL, "PodsScheduled", schedulable[1]))
    return out


def _news(
    previous: PoolStatus, current: PoolStatus, kind: ConditionType
) -> tuple[bool, str] | None:
    """(failing, message) when the condition's cause changed: it went False, or False for
    another cause (True: it recovered); None when there is nothing new to tell."""
    before, now = _find(previous, kind), _find(current, kind)
    cause, was = _cause(now), _cause(before)
    if now is None or cause == was:
        return None
    if cause is not None:
        return True, f"{now.reason}: {now.message}"
    return False, f"{now.message} (was {was[0] if was else 'unknown'})"


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
    await post_events(ctx, ref, events_for(report, previous, current))


async def post_events(
    ctx: OperatorContext, ref: PoolRef, events: list[tuple[EventType, str, str]]
) -> None:
    """Post Events about the pool, in order."""
    for event_type, reason, message in events:
        await asyncio.to_thread(
            ctx.kube.post_event,
            ref.namespace,
            ref.name,
            ref.uid,
            reason=reason,
            message=message,
            event_type=event_type,
        )
