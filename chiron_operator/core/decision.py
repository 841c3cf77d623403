"""What a policy decides, always with a reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from chiron_operator.core.enums import Reason, Role


@dataclass(frozen=True, slots=True)
class Verdict:
    """One decided value, why, and a message a human can read in an Event."""

    value: int
    reason: Reason
    message: str

    def but(self, value: int, reason: Reason, message: str) -> Verdict:
        """A stage's override; the earlier verdict's message is kept as context."""
        context = f"{message} (was: {self.message})" if self.message else message
        return Verdict(value, reason, context)


@dataclass(frozen=True, slots=True)
class RoleDecision:
    """The decision for one role.

    `replicas` is the Deployment's desired replica count. `max_num_seqs` is the batch-size cap to
    write into the pod template (the slow path: changing it restarts pods), and
    `target_max_num_seqs` is what the local controller would run if changes were free (the
    recommendation, and the fast path's admission cap).
    """

    role: Role
    replicas: Verdict
    max_num_seqs: Verdict
    target_max_num_seqs: int

    def with_replicas(self, verdict: Verdict) -> RoleDecision:
        return replace(self, replicas=verdict)


@dataclass(frozen=True, slots=True)
class PoolDecision:
    """A policy's decision for a pool at `now_s`, with the signals it was computed from.

    `observations` carries the derived signals (backpressures, waiting-time bounds...) named
    with their units, for status, the operator's metrics and the simulator's tick records.
    """

    now_s: float
    roles: Mapping[Role, RoleDecision]
    observations: Mapping[str, float] = field(default_factory=dict)

    def replicas(self, role: Role) -> int:
        found = self.roles.get(role)
        return 0 if found is None else found.replicas.value
