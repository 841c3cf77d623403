"""The pure middle of a tick: what was read -> snapshot, decision, plan, status. No I/O.

`evaluate` is everything a tick computes between reading (the API server, Prometheus) and
writing (Deployments, status, Events): it is what the operator's CPU time per tick is spent on
besides I/O, and it is measured on its own by the operator benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from chiron_operator.api import ConditionType, LLMServingPoolSpec, PoolStatus
from chiron_operator.api.spec import Mode
from chiron_operator.api.status import DecisionRecord, GatewayStatus, upsert_condition
from chiron_operator.control import chiron
from chiron_operator.control.actuation import settle
from chiron_operator.core.decision import PoolDecision
from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import PoolSnapshot
from chiron_operator.core.state import ChironState, with_bookings
from chiron_operator.core.tuning import PoolTuning
from chiron_operator.kube import Conflict, ConflictReason, KubeApiError, find_conflicts
from chiron_operator.kube.gateway import gateway_endpoint
from chiron_operator.metrics import PoolMetrics, RoleFacts, build_snapshot
from chiron_operator.operator.context import PoolRef
from chiron_operator.operator.facts import (
    UnschedulableFacts,
    gateway_replicas,
    pod_facts,
    role_bookings,
    role_facts,
    role_of,
    unschedulable_pods,
)
from chiron_operator.operator.failures import TickProblem, problem_of, reconciled
from chiron_operator.operator.objects import ClusterState
from chiron_operator.operator.plan import (
    Change,
    Plan,
    plan,
    records,
    target_records,
    unapplied,
    unapplied_roles,
)
from chiron_operator.operator.status import (
    STATE_WIRE,
    TickReport,
    build_status,
    condition,
    gateway_status,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TickInputs:
    """Everything one tick read."""

    spec: LLMServingPoolSpec
    tuning: PoolTuning  # the spec's, built once per tick
    cluster: ClusterState
    metrics: PoolMetrics
    previous: PoolStatus
    now_s: float
    generation: int
    # The pool's identity, for what status names by it (the gateway's endpoint); None leaves
    # the gateway out of status (benchmarks of the pure middle).
    pool: PoolRef | None = None


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """Everything one tick decided: what to apply, what to write, what to announce."""

    snapshot: PoolSnapshot
    the_plan: Plan
    report: TickReport
    status: PoolStatus
    # Deployments of disabled roles scaled to 0 by hand, whose record of it to rewrite.
    adopted: tuple[str, ...] = ()


def previous_status(body: Mapping[str, Any]) -> PoolStatus:
    """The pool's last status; an unreadable one (a CRD downgrade) counts as none."""
    try:
        return PoolStatus.model_validate(body.get("status") or {})
    except ValidationError:
        meta = body.get("metadata") or {}
        log.warning(
            "status of %s/%s is unreadable; starting from an empty one",
            meta.get("namespace"),
            meta.get("name"),
        )
        return PoolStatus()


def load_state(status: PoolStatus) -> ChironState:
    """Controller memory persisted in status; a fresh one when absent or unreadable."""
    if not status.controller_state:
        return chiron.initial_state()
    try:
        return STATE_WIRE.validate_python(status.controller_state)
    except ValidationError:
        log.warning("controllerState unreadable: the controllers start afresh")
        return chiron.initial_state()


def _target_records(
    decision: PoolDecision, previous: PoolStatus, tuning: PoolTuning, mode: Mode, now: datetime
) -> list[DecisionRecord]:
    if not tuning.fast_path:
        return []
    before = {role: s.target_batch_size_seqs for role, s in previous.roles.by_role().items()}
    return target_records(decision, before, mode, now)


def evaluate(
    inputs: TickInputs,
    applied: Collection[Change] | None = None,
    write_errors: Mapping[Change, KubeApiError] | None = None,
) -> TickOutcome:
    """Snapshot, Chiron's decision, the mode- and conflict-gated plan, and the new status.

    `applied` is what the tick managed to write when that is not the whole acting plan (a
    write failed): the controller memory and the records must not claim the rest happened.
    `write_errors` (writes answered with an error, applied or not) show in the records and
    `Reconciled`. The controllers' memory is the status's merged with each Deployment's
    stamps (`kube.bookings`): a restart or resize whose status write was lost still counts.
    """
    spec, state, tuning = inputs.spec, inputs.cluster, inputs.tuning
    facts, stuck, snapshot = _read(inputs, tuning)
    previous = inputs.previous
    before = with_bookings(load_state(previous), role_bookings(state.deployments))
    decision, decided = chiron.decide(snapshot, tuning, before)
    # The vLLM Deployments only: the gateway's replicas are the spec's, not the policy's, and
    # an HPA on the gateway must not stop the pool's autoscaling.
    roles = [d for d in state.deployments if role_of(d) is not None]
    found = find_conflicts(roles, state.hpas, state.scaled_objects)
    conflicts, adopted = adoptable(found, state.deployments, tuning)
    the_plan = plan(decision, facts, spec.mode, "; ".join(c.message for c in conflicts))
    skipped = unapplied(the_plan, applied)
    now = datetime.fromtimestamp(inputs.now_s, UTC)
    errors = {c: str(e) for c, e in (write_errors or {}).items()}
    report = TickReport(
        snapshot=snapshot,
        decision=decision,
        facts=facts,
        the_plan=the_plan,
        new_records=[
            *records(decision, facts, the_plan, previous.decisions, now, skipped, errors),
            *_target_records(decision, previous, tuning, spec.mode, now),
        ],
        state=settle(before, decided, decision, unapplied_roles(skipped)),
        tuning=tuning,
        mode=spec.mode,
        metric_names=inputs.metrics.metric_names,
        generation=inputs.generation,
        history_limit=spec.control.history_limit,
        now=now,
        first_scrape_grace_s=first_scrape_grace_s(spec),
        unapplied=skipped,
        queue_error=inputs.metrics.queue.error if inputs.metrics.queue else "",
        gateway=_gateway(inputs),
        unschedulable=stuck,
    )
    status = _final_status(report, previous, conflicts, write_problem(write_errors))
    return TickOutcome(snapshot, the_plan, report, status, adopted if the_plan.enforce else ())


def _final_status(
    report: TickReport,
    previous: PoolStatus,
    conflicts: list[Conflict],
    problem: TickProblem | None,
) -> PoolStatus:
    """The status with the `Conflict` and `Reconciled` conditions of this tick."""
    now, generation = report.now, report.generation
    status = _with_conflict(build_status(report, previous), conflicts, now, generation)
    done = reconciled(problem, now=now, generation=generation)
    return status.model_copy(update={"conditions": upsert_condition(status.conditions, done)})


def write_problem(write_errors: Mapping[Change, KubeApiError] | None) -> TickProblem | None:
    """The first failed Deployment write as a tick problem naming the change, or None."""
    for change, error in (write_errors or {}).items():
        what = f"{change.role.value} {change.field.value} {change.from_value} -> {change.to_value}"
        return problem_of(error, f"writing the {change.role.value} Deployment ({what})")
    return None


def _read(
    inputs: TickInputs, tuning: PoolTuning
) -> tuple[dict[Role, RoleFacts], dict[Role, UnschedulableFacts], PoolSnapshot]:
    """The role facts and the pods no node fits from the cluster objects, and the snapshot
    the policy decides on."""
    pods = pod_facts(inputs.cluster.pods)
    facts = role_facts(inputs.cluster.deployments, pods)
    stuck = unschedulable_pods(inputs.cluster.pods, inputs.now_s)
    snapshot = build_snapshot(
        inputs.now_s,
        roles=facts,
        pods=pods,
        metrics=inputs.metrics,
        staleness_s=tuning.guards.metrics_staleness_s,
        batch_deadline_s=tuning.slo.batch_deadline_s,
    )
    policy_view = {role: found.for_policy() for role, found in stuck.items()}
    return facts, stuck, replace(snapshot, unschedulable=policy_view)


def _gateway(inputs: TickInputs) -> GatewayStatus | None:
    if inputs.pool is None or not inputs.spec.gateway.enabled:
        return None
    endpoint = gateway_endpoint(inputs.pool.name, inputs.pool.namespace)
    return gateway_status(
        endpoint, gateway_replicas(inputs.cluster.deployments, inputs.cluster.pods)
    )


def adoptable(
    conflicts: Sequence[Conflict], deployments: Sequence[Mapping[str, Any]], tuning: PoolTuning
) -> tuple[list[Conflict], tuple[str, ...]]:
    """The real conflicts, and the Deployments whose external scale-down the bounds asked for.

    A role disabled with maxReplicas 0 goes to 0 replicas; someone who scaled its Deployment
    to 0 by hand did exactly that, which is no competing actor and must not block the pool.
    Its annotation still names the old count, so the operator re-records 0 (in Enforce), or
    the conflict would come back the moment the role is enabled again.
    """
    disabled = {
        str(d["metadata"]["name"])
        for d in deployments
        if int((d.get("spec") or {}).get("replicas", 1)) == 0
        and (role := role_of(d)) is not None
        and tuning.role_bounds(role).max_replicas == 0
    }
    adopted = [
        c
        for c in conflicts
        if c.reason is ConflictReason.REPLICAS_CHANGED_EXTERNALLY and c.deployment in disabled
    ]
    kept = [c for c in conflicts if c not in adopted]
    return kept, tuple(c.deployment for c in adopted)


def first_scrape_grace_s(spec: LLMServingPoolSpec) -> float:
    """How long ready pods may wait for their first scrape: Prometheus hands new targets to its
    scrapers at most every 5 s, then scrapes within an interval; three intervals and 10 s
    leave room for a slow discovery (a PodMonitor, the kubelet's file_sd) on top."""
    return 3.0 * spec.prometheus.scrape_interval_s + 10.0


def _with_conflict(
    status: PoolStatus, conflicts: list[Conflict], now: datetime, generation: int
) -> PoolStatus:
    message = "; ".join(c.message for c in conflicts) or "no other autoscaler or actor"
    reason = conflicts[0].reason.value if conflicts else "NoConflict"
    found = condition(
        ConditionType.CONFLICT, bool(conflicts), reason, message, now=now, generation=generation
    )
    return status.model_copy(update={"conditions": upsert_condition(status.conditions, found)})
