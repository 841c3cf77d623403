"""A fluid model of a pool for closed-loop controller tests.

Load spreads evenly over the instances that may serve it; ITL grows linearly with the batch,
as the measured decode tables do. It is deliberately simple: it gives controllers a plant that
reacts to their decisions, so oscillation and monotonicity can be checked without the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import (
    BatchGroup,
    BatchQueue,
    PodSignals,
    PoolSnapshot,
    RoleSnapshot,
)


@dataclass
class FluidPool:
    """Interactive load in concurrent sequences, plus an optional batch backlog."""

    interactive_load_seqs: float
    itl_base_s: float = 0.02
    itl_per_seq_s: float = 0.0008
    batch_queued_requests: int = 0
    batch_deadline_s: float = 3600.0
    output_tokens_mean: float = 300.0
    output_tokens_std: float = 250.0
    sample_age_s: float = 5.0
    replicas: dict[Role, int] = field(default_factory=dict)
    max_num_seqs: dict[Role, int] = field(default_factory=dict)
    # A gateway's cap per role (the fast path): pods run min(--max-num-seqs, this).
    gateway_caps: dict[Role, int] = field(default_factory=dict)

    def _pod(self, role: Role, index: int, running: float, waiting: float, cap: int) -> PodSignals:
        itl_s = self.itl_base_s + self.itl_per_seq_s * running
        return PodSignals(
            name=f"{role.value}-{index}",
            role=role,
            ready=True,
            max_num_seqs=cap,
            running_requests=running,
            waiting_requests=waiting,
            interactive_running_requests=running if role is not Role.BATCH else 0.0,
            interactive_waiting_requests=waiting if role is not Role.BATCH else 0.0,
            kv_cache_usage_ratio=min(1.0, running / max(cap, 1)),
            generation_tokens_per_s=running / itl_s,
            itl_s=itl_s,
            ttft_s=0.2 + waiting * 0.1,
            sample_age_s=self.sample_age_s,
        )

    def _role(self, role: Role, per_pod: float) -> RoleSnapshot:
        count = self.replicas.get(role, 0)
        ceiling = self.max_num_seqs.get(role, 64)
        cap = min(ceiling, self.gateway_caps.get(role, ceiling))
        pods = tuple(
            self._pod(role, i, min(per_pod, cap), max(0.0, per_pod - cap), cap)
            for i in range(count)
        )
        return RoleSnapshot(role, count, count, 0, ceiling, pods)

    def snapshot(self, now_s: float) -> PoolSnapshot:
        serving = self.replicas.get(Role.INTERACTIVE, 0) + self.replicas.get(Role.MIXED, 0)
        per_pod = self.interactive_load_seqs / serving if serving else 0.0
        batch_cap = float(self.max_num_seqs.get(Role.BATCH, 256))
        batch_per_pod = batch_cap if self.batch_queued_requests else 0.0
        groups: tuple[BatchGroup, ...] = ()
        if self.batch_queued_requests:
            groups = (BatchGroup(now_s + self.batch_deadline_s, self.batch_queued_requests),)
        roles = {
            Role.INTERACTIVE: self._role(Role.INTERACTIVE, per_pod),
            Role.MIXED: self._role(Role.MIXED, per_pod),
            Role.BATCH: self._role(Role.BATCH, batch_per_pod),
        }
        queue = BatchQueue(groups, self.output_tokens_mean, self.output_tokens_std, 5.0)
        return PoolSnapshot(now_s, roles, queue, metrics_age_s=self.sample_age_s)
