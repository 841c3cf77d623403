"""The pool's gateway (`spec.gateway`): `chiron-gateway`, the one entrypoint clients send to.

With the gateway on, the operator runs `<pool>-gateway` (a Deployment of `chiron-gateway`) behind
the `<pool>` Service. The gateway routes each request by class, queues interactive requests at
the pool level when every pod is full, and caps every pod at its role's target batch size from
the pool's status, so a new batch size applies without restarting vLLM.

The gateway keeps batches in a durable store (`store`, `api/store.py`): SQLite on a volume for
one replica, or PostgreSQL shared by several; the rules tying the store to the replica count sit
on this node (`rules.py`).

The defaults equal `chiron-gateway`'s own (`routing.RoutingTuning`); the api package sits below
routing and cannot import them, so tests/api checks that they agree.
"""

from __future__ import annotations

from typing import Final, Self

from pydantic import Field, StrictBool, model_validator

from chiron_operator.api.base import SpecModel
from chiron_operator.api.bounds import MAX_BATCH_SIZE_SEQS
from chiron_operator.api.rules import enforce
from chiron_operator.api.store import StoreSpec
from chiron_operator.api.template import Quantity, ResourceRequirements

# Each replica takes an equal share of every pod's batch slots (`routing.pod_cap_seqs`); many
# more replicas than a pod's batch size would leave some replicas no slot on it at all.
MAX_GATEWAY_REPLICAS: Final = 16
# Past a few minutes a queued interactive request is no longer interactive, and most HTTP
# clients and load balancers have given up on it already.
MAX_QUEUE_WAIT_S: Final = 600.0
# A million waiting requests is already far past what one pool's gateway should hold in memory.
MAX_QUEUED_REQUESTS: Final = 1_000_000
GATEWAY_REQUESTS: Final = {"cpu": "250m", "memory": "256Mi"}
GATEWAY_LIMITS: Final = {"memory": "512Mi"}


class GatewayResources(ResourceRequirements):
    """Resources of the gateway container; quantities in Kubernetes notation ("250m", "256Mi").

    The defaults are per field, so a pool that sets only `limits` keeps the default `requests`
    (the API server defaults each field the same way).
    """

    requests: dict[str, Quantity] = Field(
        default=GATEWAY_REQUESTS, description="Minimum resources, e.g. cpu, memory."
    )
    limits: dict[str, Quantity] = Field(
        default=GATEWAY_LIMITS,
        description="Maximum resources. No CPU limit by default: throttling a proxy adds "
        "latency to every request it relays.",
    )


class GatewaySpec(SpecModel):
    """The pool's gateway: its entrypoint (the `<pool>` Service), routing requests by class.

    Clients send OpenAI-compatible requests to status.gateway.endpoint; `x-chiron-class: batch`
    marks batch work (with an optional `x-chiron-deadline`), anything else is interactive. The
    gateway caps every pod at min(--max-num-seqs, its role's targetBatchSizeSeqs), so the local
    controller's batch size applies without restarting vLLM. Disabled, the pool keeps only the
    `<pool>-interactive` and `<pool>-batch` Services and clients must route themselves.
    """

    enabled: StrictBool = Field(
        default=True,
        description="Run the gateway and the <pool> Service (false: remove them).",
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=MAX_GATEWAY_REPLICAS,
        description="Gateway pods; they split every pod's batch slots between them. More than "
        "one needs the PostgreSQL store.",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Image running chiron-gateway. Default: the operator's configured gateway "
        "image (the chart sets it to the operator's own image).",
    )
    resources: GatewayResources = Field(
        default=GatewayResources(), description="Resources of the gateway container."
    )
    max_queued_requests: int = Field(
        default=256,
        ge=0,
        le=MAX_QUEUED_REQUESTS,
        description="Interactive requests that may wait at the pool level for a free slot; one "
        "more is refused with 429 (0: refuse as soon as every pod is full).",
    )
    max_queue_wait_s: float = Field(
        default=30.0,
        ge=0.001,
        le=MAX_QUEUE_WAIT_S,
        description="Longest an interactive request waits for a slot before a 429, seconds.",
    )
    mixed_reserve_slots: int = Field(
        default=0,
        ge=0,
        le=MAX_BATCH_SIZE_SEQS,
        description="Slots of every mixed pod that batch work may not take, kept free for "
        "interactive arrivals (0: batch work fills mixed pods and is cut off when needed).",
    )
    preempt_batch: StrictBool = Field(
        default=True,
        description="Let an interactive request cut off batch work on a full mixed pod, or on "
        "an interactive pod that lent it slots (the batch request is queued again and resent).",
    )
    batch_on_interactive: StrictBool = Field(
        default=True,
        description="Let batch work borrow the spare slots of interactive pods when no batch or "
        "mixed pod has one (never without preemptBatch: an interactive request cuts it off).",
    )
    interactive_reserve_slots: int = Field(
        default=8,
        ge=0,
        le=MAX_BATCH_SIZE_SEQS,
        description="Slots of every interactive pod that batch work never borrows, kept free "
        "for interactive arrivals (per gateway replica, like the caps).",
    )
    batch_prefills_per_pod: int = Field(
        default=2,
        ge=0,
        le=MAX_BATCH_SIZE_SEQS,
        description="Batch requests a mixed or interactive pod may hold before their first "
        "token (0: no limit): their prefills share every step with the interactive answers "
        "beside them. Batch pods are not limited.",
    )
    # No description: StoreSpec's docstring is the fuller `kubectl explain` text.
    store: StoreSpec = StoreSpec()

    @model_validator(mode="after")
    def _rules(self) -> Self:
        enforce(self, ("gateway",))
        return self
