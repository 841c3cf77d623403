"""From a policy decision to what the operator does: changes, their records, and the mode gate.

Pure. The tick applies a plan only in Enforce mode and only without a conflict; in every mode
the same plan feeds status, Events and metrics, so Observe and Recommend show exactly what
Enforce would have done.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from chiron_operator.api.spec import Mode
from chiron_operator.api.status import DecisionController, DecisionField, DecisionRecord
from chiron_operator.control.actuation import Unapplied
from chiron_operator.core.decision import PoolDecision, Verdict
from chiron_operator.core.enums import Role
from chiron_operator.metrics import RoleFacts


@dataclass(frozen=True, slots=True)
class Change:
    """One value the decision moves away from what the Deployment has."""

    role: Role
    field: DecisionField
    controller: DecisionController
    from_value: int
    to_value: int
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes of one tick and whether they may be applied."""

    changes: tuple[Change, ...]
    enforce: bool
    blocked_by: str = ""

    @property
    def acts(self) -> bool:
        return self.enforce and bool(self.changes)


def plan(
    decision: PoolDecision, facts: Mapping[Role, RoleFacts], mode: Mode, conflict: str = ""
) -> Plan:
    """The changes `decision` makes to the Deployments described by `facts`.

    `conflict` names what blocks enforcement (an HPA, a ScaledObject, a manual edit); the
    changes are still computed so status shows what would have happened.
    """
    changes: list[Change] = []
    for role, role_decision in decision.roles.items():
        fact = facts.get(role)
        current_replicas = fact.replicas if fact else 0
        current_seqs = fact.max_num_seqs if fact else role_decision.max_num_seqs.value
        replicas = role_decision.replicas
        if replicas.value != current_replicas:
            changes.append(
                Change(
                    role,
                    DecisionField.REPLICAS,
                    DecisionController.GLOBAL,
                    current_replicas,
                    replicas.value,
                    replicas,
                )
            )
        seqs = role_decision.max_num_seqs
        if seqs.value != current_seqs:
            changes.append(
                Change(
                    role,
                    DecisionField.BATCH_SIZE,
                    DecisionController.RESTART,
                    current_seqs,
                    seqs.value,
                    seqs,
                )
            )
    enforce = mode is Mode.ENFORCE and not conflict
    return Plan(tuple(changes), enforce, conflict)


def unapplied(the_plan: Plan, applied: Collection[Change] | None = None) -> frozenset[Change]:
    """The plan's changes that did not reach a Deployment.

    `applied` lists what the tick wrote (None: the whole plan, when it acts). Outside Enforce,
    or blocked by a conflict, nothing was written.
    """
    if not the_plan.acts:
        return frozenset(the_plan.changes)
    if applied is None:
        return frozenset()
    return frozenset(c for c in the_plan.changes if c not in applied)


def unapplied_roles(changes: Collection[Change]) -> Unapplied:
    """The controllers' view of `changes`: which roles' replicas / batch size were not written."""
    return Unapplied.of(
        replicas=[c.role for c in changes if c.field is DecisionField.REPLICAS],
        batch_size=[c.role for c in changes if c.field is DecisionField.BATCH_SIZE],
    )


def records(  # noqa: PLR0917 -- one record per decided value needs all of it
    decision: PoolDecision,
    facts: Mapping[Role, RoleFacts],
    the_plan: Plan,
    history: Sequence[DecisionRecord],
    now: datetime,
    not_applied: Collection[Change] | None = None,
    write_errors: Mapping[Change, str] | None = None,
) -> list[DecisionRecord]:
    """Decision records worth keeping: applied changes, and the rest once per value and reason.

    Recording every hold would flush the history within minutes; recording only changes would
    hide why a pool did not scale. A hold is kept when its reason differs from the last record
    of the same role and field, which answers "why not?" once per cause. A change that was not
    applied (Observe, Recommend, a conflict) repeats every tick in the same way, so it is kept
    when its value or reason differs from that last record. `not_applied` defaults to
    `unapplied(the_plan)`. A record of a change whose write the API server answered with an
    error (`write_errors`, the error's text by change) says so: applied when the change was
    found on the Deployment all the same, not applied (and retried) otherwise.
    """
    skipped = unapplied(the_plan) if not_applied is None else frozenset(not_applied)
    errors = write_errors or {}
    last = {(r.role, r.field): r for r in history}
    out = [
        _record(now, change=c, applied=c not in skipped, write_error=errors.get(c, ""))
        for c in the_plan.changes
        if c not in skipped or _is_new(last.get((c.role, c.field)), c.verdict, value=True)
    ]
    changed = {(c.role, c.field) for c in the_plan.changes}
    for role, role_decision in decision.roles.items():
        for field, controller, verdict in (
            (DecisionField.REPLICAS, DecisionController.GLOBAL, role_decision.replicas),
            (DecisionField.BATCH_SIZE, DecisionController.RESTART, role_decision.max_num_seqs),
        ):
            key = (role, field)
            if key in changed or not _is_new(last.get(key), verdict, value=False):
                continue
            before = _current(facts[role], field) if role in facts else verdict.value
            hold = Change(role, field, controller, before, verdict.value, verdict)
            out.append(_record(now, change=hold, applied=False))
    return out


def target_records(
    decision: PoolDecision,
    targets_before: Mapping[Role, int | None],
    mode: Mode,
    now: datetime,
) -> list[DecisionRecord]:
    """A record per role whose target batch size moved, for pools whose gateway applies it.

    With the fast path the target is the batch size pods run, so its moves are the changes
    users ask about ("why did the batch size change?"); the `batchSize` records only show the
    --max-num-seqs ceiling, which moves rarely. The gateway applies targets in Enforce only.
    """
    out = []
    for role, role_decision in decision.roles.items():
        before = targets_before.get(role)
        target = role_decision.target_max_num_seqs
        if before is None or before == target:
            continue
        ceiling = role_decision.max_num_seqs
        verdict = Verdict(target, ceiling.reason, ceiling.message)
        change = Change(
            role, DecisionField.TARGET_BATCH_SIZE, DecisionController.LOCAL, before, target, verdict
        )
        out.append(_record(now, change=change, applied=mode is Mode.ENFORCE))
    return out


def _is_new(last: DecisionRecord | None, verdict: Verdict, *, value: bool) -> bool:
    """Whether `verdict` says something the last record of its role and field did not.

    For a change (`value`), a new target counts too, and so does a last record that was
    applied: the same change now not applied (a conflict since) is news.
    """
    if last is None or last.reason != verdict.reason.value:
        return True
    return value and (last.to_value != verdict.value or last.applied)


def _current(fact: RoleFacts, field: DecisionField) -> int:
    return fact.replicas if field is DecisionField.REPLICAS else fact.max_num_seqs


def _record(
    now: datetime, *, change: Change, applied: bool, write_error: str = ""
) -> DecisionRecord:
    message = change.verdict.message
    if write_error:
        outcome = "found applied all the same" if applied else "not applied, retried next tick"
        message = f"[write failed: {write_error[:600]}; {outcome}] {message}"
    return DecisionRecord.model_validate(
        {
            "time": now,
            "controller": change.controller,
            "role": change.role,
            "field": change.field,
            "from": change.from_value,
            "to": change.verdict.value,
            "reason": change.verdict.reason.value,
            "message": message[:4096],
            "applied": applied,
        }
    )
