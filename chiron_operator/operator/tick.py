"""One control tick of one pool: gather -> decide -> apply -> report.

The handlers stay thin: they call `run_tick` at the pool's cadence. Every blocking call runs in
a worker thread so one slow pool (a Prometheus timing out) never stalls the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from chiron_operator.api import (
    ConditionType,
    LLMServingPoolSpec,
    PoolStatus,
    parse_spec,
    validate_spec,
)
from chiron_operator.api.status import upsert_condition
from chiron_operator.control import chiron
from chiron_operator.core.state import ChironState, from_wire
from chiron_operator.kube import EventType, find_conflicts
from chiron_operator.metrics import PoolQuery, build_snapshot
from chiron_operator.operator import cluster
from chiron_operator.operator.context import OperatorContext, PoolRef
from chiron_operator.operator.events import announce
from chiron_operator.operator.facts import pod_facts, role_facts
from chiron_operator.operator.plan import plan, records
from chiron_operator.operator.report import TickReport, build_status, condition
from chiron_operator.operator.telemetry_update import publish

log = logging.getLogger(__name__)


def previous_status(body: Mapping[str, Any]) -> PoolStatus:
    """The pool's last status; an unreadable one (a CRD downgrade) counts as none."""
    try:
        return PoolStatus.model_validate(body.get("status") or {})
    except ValidationError:
        log.warning("status of %s is unreadable; starting from an empty one", _name(body))
        return PoolStatus()


def _name(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def load_state(status: PoolStatus) -> ChironState:
    """Controller memory persisted in status; a fresh one when absent or unreadable."""
    if not status.controller_state:
        return chiron.initial_state()
    try:
        return from_wire(ChironState, status.controller_state)
    except ValidationError:
        log.warning("controllerState unreadable: the controllers start afresh")
        return chiron.initial_state()


async def report_invalid_spec(
    ctx: OperatorContext, ref: PoolRef, body: Mapping[str, Any], generation: int
) -> bool:
    """Write InvalidSpec (naming every field) and return True when the spec is invalid.

    An invalid pool is reported, never retried into a crash loop: nothing is acted on until
    the user fixes the spec, and the next spec change is validated afresh.
    """
    errors = validate_spec(body.get("spec") or {})
    previous = previous_status(body)
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    message = "; ".join(e.message for e in errors) or "spec is valid"
    invalid = condition(
        ConditionType.INVALID_SPEC,
        bool(errors),
        "SpecRejected" if errors else "SpecValid",
        message,
        now=now,
        generation=generation,
    )
    was_invalid = _condition_message(previous, ConditionType.INVALID_SPEC)
    conditions = upsert_condition(previous.conditions, invalid)
    if errors:
        ready = condition(
            ConditionType.READY, False, "InvalidSpec", message, now=now, generation=generation
        )
        conditions = upsert_condition(conditions, ready)
    if errors or was_invalid is not None:
        status = {"conditions": [c.model_dump(mode="json", by_alias=True) for c in conditions]}
        await asyncio.to_thread(cluster.patch_status, ctx.kube, ref, status)
    if errors and was_invalid != message:
        await asyncio.to_thread(
            ctx.kube.post_event,
            ref.namespace,
            ref.name,
            ref.uid,
            reason="InvalidSpec",
            message=message,
            event_type=EventType.WARNING,
        )
    return bool(errors)


def _condition_message(status: PoolStatus, kind: ConditionType) -> str | None:
    """The message of a True condition of `kind`, or None."""
    for found in status.conditions:
        if found.type == kind.value and found.status == "True":
            return found.message
    return None


async def _token(ctx: OperatorContext, ref: PoolRef, spec: LLMServingPoolSpec) -> str | None:
    secret = spec.prometheus.auth_secret_ref
    if secret is None:
        return ctx.prometheus_token
    return await asyncio.to_thread(
        cluster.read_secret_key, ctx.kube, ref.namespace, secret.name, secret.key
    )


async def run_tick(ctx: OperatorContext, ref: PoolRef, body: Mapping[str, Any]) -> None:
    """Gather, decide, apply (Enforce only), report. Raises only on API-server errors."""
    started = time.perf_counter()
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    if await report_invalid_spec(ctx, ref, body, generation):
        return
    spec = parse_spec(body.get("spec") or {})
    tuning = spec.to_tuning()
    state = await _read_complete(ctx, ref, spec)
    pods = pod_facts(state.pods)
    facts = role_facts(state.deployments, pods)
    source = ctx.source_for(ref, spec.prometheus.url, await _token(ctx, ref, spec))
    query = PoolQuery.from_spec(ref.namespace, ref.name, spec)
    metrics = await asyncio.to_thread(source.fetch, query)
    now_s = ctx.clock()
    snapshot = build_snapshot(
        now_s,
        roles=facts,
        pods=pods,
        metrics=metrics,
        staleness_s=tuning.guards.metrics_staleness_s,
        batch_deadline_s=tuning.slo.batch_deadline_s,
    )
    previous = previous_status(body)
    decision, new_state = chiron.decide(snapshot, tuning, load_state(previous))
    conflicts = find_conflicts(state.deployments, state.hpas, state.scaled_objects)
    conflict_text = "; ".join(c.message for c in conflicts)
    the_plan = plan(decision, facts, spec.mode, conflict_text)
    if the_plan.acts:
        await asyncio.to_thread(
            cluster.apply_plan, ctx.kube, ref, spec, the_plan, snapshot=snapshot, pods=state.pods
        )
    now = datetime.fromtimestamp(now_s, UTC)
    report = TickReport(
        snapshot=snapshot,
        decision=decision,
        facts=facts,
        the_plan=the_plan,
        new_records=records(decision, facts, the_plan, previous.decisions, now),
        state=new_state,
        tuning=tuning,
        mode=spec.mode,
        metric_names=metrics.metric_names,
        generation=generation,
        history_limit=spec.control.history_limit,
        now=now,
    )
    status = _with_conflict(build_status(report, previous), conflicts, now, generation)
    wire = status.model_dump(mode="json", by_alias=True)
    await asyncio.to_thread(cluster.patch_status, ctx.kube, ref, wire)
    await announce(ctx, ref, report, previous, status)
    publish(ctx.telemetry, ref, report, metrics.queries, time.perf_counter() - started)


async def _read_complete(
    ctx: OperatorContext, ref: PoolRef, spec: LLMServingPoolSpec
) -> cluster.ClusterState:
    """The pool's objects, creating any role Deployment its spec needs and that is missing.

    A tick racing the create handler, or a Deployment someone deleted, would otherwise be
    planned as a role at zero replicas and "scaled" through a Deployment that is not there.
    """
    state = await asyncio.to_thread(cluster.read_cluster, ctx.kube, ref)
    if cluster.missing_roles(ref, spec, state.deployments):
        await asyncio.to_thread(cluster.ensure_objects, ctx.kube, ref, spec, state.deployments)
        state = await asyncio.to_thread(cluster.read_cluster, ctx.kube, ref)
    return state


def _with_conflict(
    status: PoolStatus, conflicts: list[Any], now: datetime, generation: int
) -> PoolStatus:
    message = "; ".join(c.message for c in conflicts) or "no other autoscaler or actor"
    reason = conflicts[0].reason.value if conflicts else "NoConflict"
    found = condition(
        ConditionType.CONFLICT, bool(conflicts), reason, message, now=now, generation=generation
    )
    return status.model_copy(update={"conditions": upsert_condition(status.conditions, found)})
