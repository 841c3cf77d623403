"""From a policy decision to what the operator does: changes, their records, and the mode gate.

Pure. The tick applies a plan only in Enforce mode and only without a conflict; in every mode
the same plan feeds status, Events and metrics, so Observe and Recommend show exactly what
Enforce would have done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from chiron_operator.api.spec import Mode
from chiron_operator.api.status import DecisionController, DecisionField, DecisionRecord
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


def records(
    decision: PoolDecision,
    facts: Mapping[Role, RoleFacts],
    the_plan: Plan,
    history: Sequence[DecisionRecord],
    now: datetime,
) -> list[DecisionRecord]:
    """Decision records worth keeping: every change, and every hold whose reason is new.

    Recording every hold would flush the history within minutes; recording only changes would
    hide why a pool did not scale. A hold is kept when its reason differs from the last record
    of the same role and field, which answers "why not?" once per cause.
    """
    out = [
        _record(
            now,
            controller=c.controller,
            role=c.role,
            field=c.field,
            before=c.from_value,
            verdict=c.verdict,
            applied=the_plan.enforce,
        )
        for c in the_plan.changes
    ]
    changed = {(c.role, c.field) for c in the_plan.changes}
    last_reason = {(r.role, r.field): r.reason for r in history}
    for role, role_decision in decision.roles.items():
        for field, controller, verdict in (
            (DecisionField.REPLICAS, DecisionController.GLOBAL, role_decision.replicas),
            (DecisionField.BATCH_SIZE, DecisionController.RESTART, role_decision.max_num_seqs),
        ):
            key = (role, field)
            if key not in changed and last_reason.get(key) != verdict.reason.value:
                before = _current(facts[role], field) if role in facts else verdict.value
                out.append(
                    _record(
                        now,
                        controller=controller,
                        role=role,
                        field=field,
                        before=before,
                        verdict=verdict,
                        applied=False,
                    )
                )
    return out


def _current(fact: RoleFacts, field: DecisionField) -> int:
    return fact.replicas if field is DecisionField.REPLICAS else fact.max_num_seqs


def _record(
    now: datetime,
    *,
    controller: DecisionController,
    role: Role,
    field: DecisionField,
    before: int,
    verdict: Verdict,
    applied: bool,
) -> DecisionRecord:
    return DecisionRecord.model_validate(
        {
            "time": now,
            "controller": controller,
            "role": role,
            "field": field,
            "from": before,
            "to": verdict.value,
            "reason": verdict.reason.value,
            "message": verdict.message[:4096],
            "applied": applied,
        }
    )
