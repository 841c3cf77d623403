"""Pure ticks for the operator's unit tests: `outcome.evaluate` on hand-built cluster objects.

A `PureTicks` is one pool whose Deployments, pods and Prometheus samples the test sets; each
`tick` feeds the previous tick's status back in, exactly as the operator reads it from the
pool, and (in Enforce, unless told otherwise) applies the plan to the fake Deployments.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chiron_operator.api import PoolStatus, parse_spec
from chiron_operator.api.status import DecisionField
from chiron_operator.core.enums import Role
from chiron_operator.kube import build_deployment, replicas_patch
from chiron_operator.kube.labels import LABEL_POOL, LABEL_ROLE
from chiron_operator.metrics import PodMetrics, PoolMetrics
from chiron_operator.metrics.results import QueueMetrics
from chiron_operator.operator.objects import ClusterState
from chiron_operator.operator.outcome import TickInputs, TickOutcome, evaluate
from chiron_operator.operator.plan import Change
from tests.operator.harness import merged, pool_spec

Json = dict[str, Any]
POOL = "llama"
NAMESPACE = "llm"
TICK_S = 1.0


def busy(seqs: int) -> PodMetrics:
    """A pod whose batch is full with a queue behind it: the pool wants more instances."""
    return PodMetrics(
        running_requests=float(seqs),
        waiting_requests=3.0,
        generation_tokens_per_s=100.0,
        mean_itl_s=0.02,
        itl_s=0.02,
        itl_observations_per_s=1.0,
        ttft_s=0.5,
        ttft_observations_per_s=1.0,
        sample_age_s=1.0,
    )


def _pod(role: Role, index: int) -> Json:
    return {
        "metadata": {
            "name": f"{POOL}-{role.value}-abc-{index}",
            "namespace": NAMESPACE,
            "labels": {LABEL_POOL: POOL, LABEL_ROLE: role.value},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def _pending_pod(role: Role, index: int, since_s: float) -> Json:
    """A pod the scheduler found no node for, as kube-scheduler reports it."""
    since = datetime.fromtimestamp(since_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {
            "name": f"{POOL}-{role.value}-pending-{index}",
            "namespace": NAMESPACE,
            "labels": {LABEL_POOL: POOL, LABEL_ROLE: role.value},
        },
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                    "lastTransitionTime": since,
                }
            ],
        },
    }


@dataclass
class PureTicks:
    """One pool ticked through `evaluate`; `replicas` are the Deployments' (and ready pods')."""

    spec: Json
    replicas: dict[Role, int]
    now_s: float = 1_000_000.0
    status: Json = field(default_factory=dict)
    deployments: dict[Role, Json] = field(default_factory=dict)
    # What the batch-queue query answered (None: no batchQueue configured).
    queue: QueueMetrics | None = None
    # Pods of a role no node fits, and since when (they count in `replicas`, never ready).
    unschedulable: dict[Role, tuple[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = parse_spec(self.spec)
        bounds = spec.to_tuning()
        for role, count in self.replicas.items():
            seqs = bounds.role_bounds(role).initial_batch_size_seqs
            body = build_deployment(
                POOL, NAMESPACE, "uid", spec, role, replicas=count, max_num_seqs=seqs
            )
            self.deployments[role] = body

    def set_replicas(self, role: Role, count: int, *, by_operator: bool = True) -> None:
        """Scale a Deployment; by the operator (its annotation follows) or by someone else."""
        body = self.deployments[role]
        patch = replicas_patch(count) if by_operator else {"spec": {"replicas": count}}
        self.deployments[role] = merged(body, patch)
        self.replicas[role] = count

    def cluster(self) -> ClusterState:
        pods = []
        for role, count in self.replicas.items():
            stuck, since_s = self.unschedulable.get(role, (0, self.now_s))
            stuck = min(stuck, count)
            pods += [_pod(role, i) for i in range(count - stuck)]
            pods += [_pending_pod(role, i, since_s) for i in range(stuck)]
        return ClusterState(list(self.deployments.values()), pods, [], [])

    def metrics(self, seqs: int) -> PoolMetrics:
        ready = [p for p in self.cluster().pods if p["status"].get("phase") != "Pending"]
        pods = {str(p["metadata"]["name"]): busy(seqs) for p in ready}
        return PoolMetrics(pods=pods, queue=self.queue, fetched_at_s=self.now_s)

    def tick(
        self, *, seqs: int = 4, spec: Mapping[str, Any] | None = None, apply: bool = True
    ) -> TickOutcome:
        """One tick; in Enforce (and `apply`) its plan is written to the fake Deployments."""
        self.now_s += TICK_S
        parsed = parse_spec(merged(self.spec, spec or {}))
        previous = PoolStatus.model_validate(self.status)
        inputs = TickInputs(
            parsed, parsed.to_tuning(), self.cluster(), self.metrics(seqs), previous, self.now_s, 1
        )
        applied: Collection[Change] | None = None if apply else ()
        outcome = evaluate(inputs, applied)
        if outcome.the_plan.acts and apply:
            for change in outcome.the_plan.changes:
                if change.field is DecisionField.REPLICAS:
                    self.set_replicas(change.role, change.to_value)
        self.status = outcome.status.model_dump(mode="json", by_alias=True)
        return outcome


def observe_pool(mode: str = "Observe", **override: Any) -> PureTicks:
    """A pool whose mixed role wants to grow (every pod full and queueing), in `mode`."""
    spec = pool_spec("http://prometheus:9090", mode=mode, **override)
    return PureTicks(spec, {Role.INTERACTIVE: 1, Role.MIXED: 1})
