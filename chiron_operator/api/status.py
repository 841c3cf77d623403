"""The `LLMServingPool` status: what the operator observed, decided and remembers.

Everything a user needs to see why a pool has the size it has is here, in the order they look
for it: the summary fields behind `kubectl get lsp`'s columns, per-role counts and batch sizes,
the signals the policy read, conditions, and the last decisions with their reasons. Unknown
signals are null (JSON has no NaN), never 0: zero is an observation.

`controllerState` is opaque on purpose: it is `ChironState` in the core's wire form, owned by
the controllers, and typing it here would freeze their memory layout into the CRD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, Field

from chiron_operator.api.base import StatusModel
from chiron_operator.core.enums import Role

MAX_CONDITION_MESSAGE: Final = 32768
ROLE_LETTERS: Final = {Role.INTERACTIVE: "I", Role.MIXED: "M", Role.BATCH: "B"}


SLACK_FLOOR_RATIO: Final = -1e6


def finite_or_none(value: float | None) -> float | None:
    """A signal as status stores it: NaN and infinities (unknown) become None."""
    return value if value is not None and math.isfinite(value) else None


# Status numbers are JSON: NaN and infinities have no JSON form (the status patch would fail
# and the pool would show nothing at all), so whatever computed them, status holds None instead.
Finite = Annotated[float | None, AfterValidator(finite_or_none)]


class ConditionType(StrEnum):
    """Condition types a pool reports."""

    READY = "Ready"
    METRICS_AVAILABLE = "MetricsAvailable"
    SCALING = "Scaling"
    CONFLICT = "Conflict"
    INVALID_SPEC = "InvalidSpec"
    # Whether the last tick ran to its end (False: why it failed; it is retried every interval).
    RECONCILED = "Reconciled"
    # Whether every pod of the pool found a node (False: which role, how many, since when).
    SCHEDULABLE = "Schedulable"


class ConditionStatus(StrEnum):
    """Kubernetes condition status."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class DecisionController(StrEnum):
    """Which controller made a decision."""

    GLOBAL = "global"
    LOCAL = "local"
    RESTART = "restart"


class DecisionField(StrEnum):
    """What a decision changed."""

    REPLICAS = "replicas"
    BATCH_SIZE = "batchSize"
    # The cap the pool's gateway applies (the local controller's fast path, no restart).
    TARGET_BATCH_SIZE = "targetBatchSize"


class MetricNames(StrEnum):
    """Which vLLM metric names the pool's pods export.

    v1: current names (vllm:kv_cache_usage_perc, vllm:inter_token_latency_seconds); legacy:
    older vLLM's (vllm:gpu_cache_usage_perc, vllm:time_per_output_token_seconds); mixed: both,
    during a rollout across vLLM versions.
    """

    V1 = "v1"
    LEGACY = "legacy"
    MIXED = "mixed"


def _truncate_message(value: object) -> object:
    # A condition message is often an exception's text; an oversized one must not make the
    # status itself invalid, so it is cut rather than rejected.
    if isinstance(value, str) and len(value) > MAX_CONDITION_MESSAGE:
        return value[: MAX_CONDITION_MESSAGE - 3] + "..."
    return value


class Condition(StatusModel):
    """A Kubernetes condition (the shape of metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Condition type, one of ConditionType's values.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason for the condition's last transition.",
    )
    message: Annotated[str, BeforeValidator(_truncate_message)] = Field(
        default="", max_length=MAX_CONDITION_MESSAGE, description="Human-readable details."
    )
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed for."
    )


class RoleStatus(StatusModel):
    """One role's instance counts and batch sizes."""

    desired_replicas: int = Field(default=0, description="Replicas the policy wants.")
    current_replicas: int = Field(default=0, description="Replicas of the role's Deployment.")
    ready_replicas: int = Field(default=0, description="Ready pods of the role.")
    batch_size_seqs: int | None = Field(
        default=None, description="--max-num-seqs in the role's pod template (applied)."
    )
    target_batch_size_seqs: int | None = Field(
        default=None, description="--max-num-seqs the local controller aims for."
    )


class RoleStatuses(StatusModel):
    """Per-role status."""

    interactive: RoleStatus = Field(default=RoleStatus())
    mixed: RoleStatus = Field(default=RoleStatus())
    batch: RoleStatus = Field(default=RoleStatus())

    def by_role(self) -> dict[Role, RoleStatus]:
        """The roles keyed by core Role, in Role order."""
        return {Role.INTERACTIVE: self.interactive, Role.MIXED: self.mixed, Role.BATCH: self.batch}


class SignalsStatus(StatusModel):
    """The pool-wide signals of the last tick; null when unknown."""

    interactive_backpressure_ratio: Finite = Field(
        default=None, description="Busy instances / (interactive + mixed instances)."
    )
    batch_backpressure_ratio: Finite = Field(
        default=None, description="Share of batch deadline groups estimated to miss."
    )
    ttft_s: Finite = Field(
        default=None, description="Interactive time to first token at the SLO percentile, s."
    )
    itl_s: Finite = Field(
        default=None, description="Interactive inter-token latency at the SLO percentile, s."
    )
    ttft_slack_ratio: Finite = Field(
        default=None, description="1 - ttftS / target; negative when the SLO is missed."
    )
    itl_slack_ratio: Finite = Field(
        default=None, description="1 - itlS / target; negative when the SLO is missed."
    )
    kv_cache_usage_ratio: Finite = Field(
        default=None, description="Mean KV-cache usage over the pool's pods."
    )
    queued_batch_requests: int | None = Field(
        default=None, description="Batch requests waiting in the batch queue."
    )
    batch_instance_tokens_per_s: Finite = Field(
        default=None,
        description="Output tokens/s one saturated batch instance generates: measured on the "
        "pool's batch pods (a moving average), or tuning.global.batchInstancePriorTokensPerS "
        "until one has been.",
    )
    metrics_age_s: Finite = Field(default=None, description="Age of the newest sample, s.")
    metric_names: MetricNames | None = Field(
        default=None, description="Which vLLM metric names the pods export."
    )


class DecisionRecord(StatusModel):
    """One decision of one controller for one role."""

    time: datetime = Field(description="When it was decided.")
    controller: DecisionController = Field(description="global, local or restart.")
    role: Role = Field(description="The role it applies to.")
    field: DecisionField = Field(
        description="replicas, batchSize (--max-num-seqs) or targetBatchSize (the cap the "
        "pool's gateway applies, with no restart)."
    )
    from_value: int = Field(alias="from", description="Value before.")
    to_value: int = Field(alias="to", description="Value decided.")
    reason: str = Field(max_length=1024, description="Reason (CamelCase).")
    message: str = Field(default="", max_length=4096, description="Why, for humans.")
    applied: bool = Field(description="Whether it was applied (false outside Enforce mode).")


class RoleRecommendation(StatusModel):
    """What the policy would set for one role."""

    replicas: int = Field(description="Recommended replicas.")
    batch_size_seqs: int = Field(description="Recommended --max-num-seqs.")


class Recommendations(StatusModel):
    """Per-role recommendations (Recommend mode); null for a role without one."""

    interactive: RoleRecommendation | None = None
    mixed: RoleRecommendation | None = None
    batch: RoleRecommendation | None = None


class GatewayStatus(StatusModel):
    """The pool's gateway (spec.gateway): where clients send requests, and how many serve."""

    endpoint: str = Field(
        default="", description="In-cluster URL clients send to: http://<pool>.<namespace>.svc:80."
    )
    replicas: int = Field(default=0, description="Replicas of the <pool>-gateway Deployment.")
    ready_replicas: int = Field(default=0, description="Ready gateway pods.")


class PoolStatus(StatusModel):
    """Status of an LLMServingPool."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation this status was computed for."
    )
    replicas_summary: str = Field(
        default="", description="Ready/desired per role, e.g. I:2/2 M:1/2 B:0/0."
    )
    batch_size_summary: str = Field(
        default="", description="Applied --max-num-seqs per role, interactive/mixed/batch."
    )
    slo_slack_ratio: Finite = Field(
        default=None, description="The tighter of the TTFT and ITL slack ratios."
    )
    last_reason: str = Field(default="", description="Reason of the latest decision.")
    roles: RoleStatuses = Field(default=RoleStatuses(), description="Per-role status.")
    gateway: GatewayStatus | None = Field(
        default=None, description="The pool's gateway; null when spec.gateway.enabled is false."
    )
    signals: SignalsStatus = Field(default=SignalsStatus(), description="Last tick's signals.")
    conditions: tuple[Condition, ...] = Field(
        default=(),
        description="Current conditions, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    decisions: tuple[DecisionRecord, ...] = Field(
        default=(), description="Latest decisions, oldest first (spec.control.historyLimit)."
    )
    recommendations: Recommendations = Field(
        default=Recommendations(), description="What the policy recommends (Recommend mode)."
    )
    controller_state: dict[str, Any] | None = Field(
        default=None,
        description="Controller memory persisted across operator restarts (opaque).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


def slack_ratio(observed_s: float | None, target_s: float) -> float | None:
    """1 - observed/target: 0.25 is 25% headroom, negative is an SLO miss; None if unknown.

    A miss beyond `SLACK_FLOOR_RATIO` reads as that floor: an observation a million times the
    target says all there is to say, and the ratio must stay a finite JSON number.
    """
    known = finite_or_none(observed_s)
    if known is None or not target_s > 0.0:
        return None
    ratio = 1.0 - known / target_s
    return max(ratio, SLACK_FLOOR_RATIO) if math.isfinite(ratio) else SLACK_FLOOR_RATIO


def slo_slack_ratio(signals: SignalsStatus) -> float | None:
    """The tighter of the TTFT and ITL slacks (what the pool is closest to missing)."""
    known = [s for s in (signals.ttft_slack_ratio, signals.itl_slack_ratio) if s is not None]
    return min(known) if known else None


def replicas_summary(roles: RoleStatuses) -> str:
    """Ready/desired per role, for the Replicas column: `I:2/2 M:1/2 B:0/0`."""
    return " ".join(
        f"{ROLE_LETTERS[role]}:{status.ready_replicas}/{status.desired_replicas}"
        for role, status in roles.by_role().items()
    )


def batch_size_summary(roles: RoleStatuses) -> str:
    """Applied batch size per role, for the Batch column: `32/64/256` (- when none yet)."""
    return "/".join(
        "-" if status.batch_size_seqs is None else str(status.batch_size_seqs)
        for status in roles.by_role().values()
    )


def upsert_condition(conditions: Sequence[Condition], new: Condition) -> tuple[Condition, ...]:
    """`conditions` with `new` in place of the condition of its type.

    The transition time only moves when the status changes, as Kubernetes conventions ask, so
    a condition re-asserted every tick still tells since when it holds.
    """
    old = next((c for c in conditions if c.type == new.type), None)
    if old is None:
        return (*conditions, new)
    if old.status == new.status:
        new = new.model_copy(update={"last_transition_time": old.last_transition_time})
    return tuple(new if c.type == new.type else c for c in conditions)
