"""The `LLMServingPool` custom resource: the one object a user writes to run a Chiron pool.

The spec embeds the core tunables (`chiron_operator.core.tuning`) as they are, so the CRD's
schema, descriptions, bounds and defaults come from the same types the controllers read.
`LLMServingPoolSpec.to_tuning()` is the only bridge from the wire to the policy.

No scale subresource. A scale subresource exposes one replica count (`specReplicasPath`) per
object, but a pool has three (interactive, mixed, batch) whose split is the policy itself; any
single number would be a lie about the other two. It would also invite an HPA or `kubectl scale`
to drive the pool, which is exactly the fight between autoscalers the operator refuses (it
reports a Conflict condition instead). Each role's Deployment keeps its own scale subresource.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Literal, Self

from pydantic import ConfigDict, Field, StrictBool, field_validator, model_validator
from pydantic.fields import FieldInfo

from chiron_operator.api.base import SpecModel
from chiron_operator.api.batch_queue import (
    ONE_QUEUE_SOURCE_RULE,
    BatchQueueMetric,
    check_one_source,
)
from chiron_operator.api.bounds import ONE_DAY_S, wire_errors
from chiron_operator.api.gateway import GatewaySpec
from chiron_operator.api.names import check_pool_name
from chiron_operator.api.rules import enforce
from chiron_operator.api.status import PoolStatus
from chiron_operator.api.template import PodTemplate
from chiron_operator.core.enums import Role
from chiron_operator.core.tuning import (
    GlobalTuning,
    GuardTuning,
    LocalTuning,
    PoolTuning,
    RestartTuning,
    RoleBounds,
    SloTargets,
)

# The policy's per-role defaults (interactive keeps one instance, batch runs large batches).
ROLE_DEFAULTS: Final[Mapping[Role, RoleBounds]] = MappingProxyType(dict(PoolTuning().bounds))
# The answer length a draining pod waits for by default: a long chat answer (the Azure conv
# trace's p99 output is below it). Longer work, batch work mostly, is aborted at the bound and
# retried by its client; the bound keeps a hung GPU from holding a pod for hours.
DRAIN_OUTPUT_TOKENS: Final = 1024
# A day: the longest a draining pod may hold on to requests (the derived default included).
MAX_REQUEST_TIMEOUT_S: Final = 86400


class Mode(StrEnum):
    """What the operator may do to a pool's replica counts and batch sizes.

    Observe: run the controllers and publish signals and decisions in status, act on nothing.
    Recommend: as Observe, and also publish recommendations in status and as Events.
    Enforce: apply the decisions to the role Deployments.

    Observe is the default because a new autoscaler has to earn trust: with a wrong SLO, a
    Prometheus query that returns the wrong pods or a bound set too low, an enforcing pool
    scales a live service down on its first tick. In Observe the user reads the decisions
    (`status.decisions`, applied false) first, and enabling them is one field.
    """

    OBSERVE = "Observe"
    RECOMMEND = "Recommend"
    ENFORCE = "Enforce"


class SecretKeyRef(SpecModel):
    """A key of a Secret in the pool's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Secret name.")
    key: str = Field(default="token", min_length=1, description="Key within the Secret.")


class PrometheusSpec(SpecModel):
    """Where the pool's vLLM metrics are read from."""

    # No user info, query or fragment: `?` or `#` would move the operator's `/api/v1/query`
    # out of the path, and credentials belong in authSecretRef, not in a URL copied to logs.
    url: str = Field(
        pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
        max_length=2048,
        description="Prometheus base URL, e.g. http://prometheus-operated.monitoring.svc:9090 "
        "(a path is allowed; no user info, query or fragment).",
    )
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret holding a bearer token for Prometheus, if it needs one."
    )
    window_s: float = Field(
        default=60.0, gt=0.0, description="Window of rate and quantile queries, seconds."
    )
    scrape_interval_s: float = Field(
        default=15.0, gt=0.0, description="How often Prometheus scrapes the vLLM pods, seconds."
    )
    pod_label: str = Field(
        default="pod", min_length=1, description="Series label holding the pod name."
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        enforce(self, ("prometheus",))
        return self


class BatchQueueSpec(SpecModel):
    """Where the batch backlog is read from, for a pool whose batch work queues elsewhere.

    Optional: a pool with its gateway (spec.gateway.enabled, the default) reads the gateway's
    own batch queue and the output lengths of the batch requests it completed, with no query to
    write. Set this only to read a queue of your own instead; the output lengths then come from
    vLLM's histograms (`vllm:request_generation_tokens`), and a pool with neither sees no batch
    queue. Name the queue's series with `metric` (a metric name and exact label values; the
    operator confines it to the pool's namespace), or, where the cluster admin allows raw
    PromQL (the operator's `--allow-pool-promql`), with `queuedRequestsQuery`: a PromQL instant
    query returning this pool's queued batch requests, one series per deadline. Either way the
    series' `deadlineLabel` label holds the deadline as unix seconds, its value the number of
    requests queued with it. Chiron groups the backlog by deadline to estimate whether the
    current capacity finishes each group in time (batch backpressure). Series without the label
    fall back to `spec.slo.batchDeadlineS`. A raw query the operator may not run reads no
    queue: the batch role holds and MetricsAvailable says why.
    """

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [ONE_QUEUE_SOURCE_RULE]}
    )

    metric: BatchQueueMetric | None = Field(
        default=None,
        description="The series of the pool's namespace holding the queue, per deadline.",
    )
    queued_requests_query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="PromQL returning queued batch requests, one series per deadline; "
        "replaces the queue of the pool's gateway. Runs only when the operator was started "
        "with --allow-pool-promql.",
    )
    deadline_label: str = Field(
        default="deadline",
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        description="Label of those series holding the deadline as unix seconds.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        check_one_source(self, self.metric, self.queued_requests_query)
        return self


class ControlSpec(SpecModel):
    """How often the controllers run and how much history status keeps."""

    interval_s: float = Field(
        default=15.0,
        ge=1.0,
        le=ONE_DAY_S,
        description="Global controller cadence (instance counts), seconds.",
    )
    local_interval_s: float = Field(
        default=15.0,
        ge=1.0,
        le=ONE_DAY_S,
        description="Local controller cadence (batch sizes), seconds.",
    )
    history_limit: int = Field(
        default=20, ge=0, le=100, description="Decisions kept in status.decisions."
    )


class RolesSpec(SpecModel):
    """Bounds per instance role. Set maxReplicas (and minReplicas) to 0 to disable a role.

    Fields left out of a role take that role's defaults (shown here), not generic ones: a batch
    role given only maxReplicas still runs large batches. The CRD's defaults match.
    """

    interactive: RoleBounds = Field(
        default=ROLE_DEFAULTS[Role.INTERACTIVE],
        description="Instances serving interactive requests only.",
    )
    mixed: RoleBounds = Field(
        default=ROLE_DEFAULTS[Role.MIXED],
        description="Instances serving interactive requests first and batch work in the "
        "spare capacity (preempted when interactive load arrives).",
    )
    batch: RoleBounds = Field(
        default=ROLE_DEFAULTS[Role.BATCH], description="Instances serving batch requests only."
    )

    @model_validator(mode="before")
    @classmethod
    def _role_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for role, defaults in ROLE_DEFAULTS.items():
            given = data.get(role.value)
            if isinstance(given, dict):
                merged[role.value] = _fill(given, defaults)
        return merged

    @model_validator(mode="after")
    def _rules(self) -> Self:
        enforce(self, ("roles",))
        return self

    def bounds(self) -> dict[Role, RoleBounds]:
        """The bounds keyed by core Role."""
        return {Role.INTERACTIVE: self.interactive, Role.MIXED: self.mixed, Role.BATCH: self.batch}


def _fill(given: dict[str, Any], defaults: RoleBounds) -> dict[str, Any]:
    """`given` with every field it leaves out taken from `defaults` (by wire name)."""
    filled = dict(given)
    fields: dict[str, FieldInfo] = getattr(RoleBounds, "__pydantic_fields__")  # noqa: B009
    for attr, info in fields.items():
        alias = info.alias or attr
        if alias not in given and attr not in given:
            filled[alias] = getattr(defaults, attr)
    return filled


class DrainSpec(SpecModel):
    """How a vLLM pod leaves on a scale-down or a batch-size restart, without failing requests.

    A deleted pod is taken out of its Services' endpoints at once, but kube-proxy, gateways and
    load balancers learn of it seconds later. So its preStop hook first sleeps
    `endpointDelayS` while vLLM keeps serving; then vLLM gets SIGTERM, fails its readiness
    probe, refuses new requests, lets the ones in flight finish for at most `requestTimeoutS`
    (vLLM's --shutdown-timeout) and aborts the rest. The pod's terminationGracePeriodSeconds is
    endpointDelayS + requestTimeoutS + 5 s (vLLM's own engine shutdown); the kubelet kills the
    pod after it. A pod with nothing in flight exits right after the preStop sleep.
    """

    endpoint_delay_s: int = Field(
        default=15,
        ge=0,
        le=3600,
        description="preStop sleep before SIGTERM, seconds: how long routing takes to stop "
        "sending to a deleted pod (0: no preStop hook).",
    )
    request_timeout_s: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REQUEST_TIMEOUT_S,
        description="Longest wait for in-flight requests after SIGTERM, seconds. Default: "
        f"what a {DRAIN_OUTPUT_TOKENS}-token answer takes at the SLOs, "
        f"ceil(slo.interactiveTtftS + {DRAIN_OUTPUT_TOKENS - 1} x slo.interactiveItlS), "
        f"at most {MAX_REQUEST_TIMEOUT_S} s.",
    )
    shutdown_timeout_flag: StrictBool = Field(
        default=False,
        description="Pass requestTimeoutS to vLLM as --shutdown-timeout, which makes vLLM "
        "drain on SIGTERM instead of aborting (vLLM v0.18.0 and later, vllm-project/vllm#34730; "
        "older ones reject the flag and would not start).",
    )

    def request_timeout(self, slo: SloTargets) -> int:
        """requestTimeoutS, or its default derived from the SLOs; seconds."""
        if self.request_timeout_s is not None:
            return self.request_timeout_s
        answer_s = slo.interactive_ttft_s + (DRAIN_OUTPUT_TOKENS - 1) * slo.interactive_itl_s
        return min(math.ceil(answer_s), MAX_REQUEST_TIMEOUT_S)


class TuningSpec(SpecModel):
    """The algorithms' tunables, as chiron_operator.core.tuning defines and defaults them."""

    local: LocalTuning = Field(default=LocalTuning(), description="Local controller.")
    restart: RestartTuning = Field(
        default=RestartTuning(), description="When a new batch size is worth restarting pods."
    )
    global_scaling: GlobalTuning = Field(
        default=GlobalTuning(), alias="global", description="Global controller."
    )
    guards: GuardTuning = Field(
        default=GuardTuning(), description="Guard rails: steps, cooldowns, staleness."
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        enforce(self, ("tuning",))
        return self


def pool_tuning(
    slo: SloTargets,
    roles: RolesSpec,
    tuning: TuningSpec,
    *,
    fast_path: bool = False,
    windows: tuple[float, float] | None = None,
) -> PoolTuning:
    """The controllers' configuration from a spec's policy parts (pools and sim scenarios).

    `fast_path`: a gateway caps the pods at the target batch size (`PoolTuning.fast_path`).
    `windows`: (rate window, scrape interval) in seconds of the signals the policy reads;
    None keeps `PoolTuning`'s defaults, which are `PrometheusSpec`'s.
    """
    built = PoolTuning(
        slo=slo,
        bounds=roles.bounds(),
        local=tuning.local,
        restart=tuning.restart,
        global_scaling=tuning.global_scaling,
        guards=tuning.guards,
        fast_path=fast_path,
    )
    if windows is None:
        return built
    rate_window_s, scrape_interval_s = windows
    return replace(built, rate_window_s=rate_window_s, scrape_interval_s=scrape_interval_s)


class LLMServingPoolSpec(SpecModel):
    """A pool of vLLM instances serving one model, autoscaled by Chiron against its SLOs."""

    model: str = Field(
        min_length=1,
        max_length=512,
        description="Model vLLM serves (Hugging Face id or path), e.g. "
        "meta-llama/Llama-3.1-8B-Instruct; clients request it by this name.",
    )
    # No field descriptions here: the types' docstrings are the fuller `kubectl explain` text.
    mode: Mode = Mode.OBSERVE
    template: PodTemplate = Field(description="The vLLM pods every role runs.")
    slo: SloTargets = Field(default=SloTargets(), description="Latency targets per class.")
    roles: RolesSpec = Field(default=RolesSpec(), description="Bounds per instance role.")
    prometheus: PrometheusSpec = Field(description="Where the vLLM metrics are read from.")
    batch_queue: BatchQueueSpec | None = None
    control: ControlSpec = Field(default=ControlSpec(), description="Controller cadence.")
    drain: DrainSpec = DrainSpec()
    gateway: GatewaySpec = GatewaySpec()
    tuning: TuningSpec = Field(default=TuningSpec(), description="The algorithms' tunables.")

    @model_validator(mode="before")
    @classmethod
    def _wire(cls, data: Any) -> Any:
        # Before pydantic's lax coercions: the API server would refuse "yes" for a boolean.
        wire_errors(cls, data)
        return data

    @model_validator(mode="after")
    def _rules(self) -> Self:
        enforce(self, ())
        return self

    def to_tuning(self) -> PoolTuning:
        """The policy configuration this spec asks for."""
        windows = (self.prometheus.window_s, self.prometheus.scrape_interval_s)
        return pool_tuning(
            self.slo, self.roles, self.tuning, fast_path=self.gateway.enabled, windows=windows
        )


class LLMServingPool(SpecModel):
    """A whole `LLMServingPool` object as stored by the API server."""

    # Literals repeat API_VERSION and KIND because type checkers need them spelled out.
    api_version: Literal["chiron.io/v1alpha1"] = "chiron.io/v1alpha1"
    kind: Literal["LLMServingPool"] = "LLMServingPool"
    metadata: dict[str, Any] = Field(default={})
    spec: LLMServingPoolSpec
    status: PoolStatus | None = None

    @field_validator("metadata")
    @classmethod
    def _name(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        # A name may be absent (generateName); a given one becomes the objects' names.
        if "name" in metadata and (problem := check_pool_name(metadata["name"])) is not None:
            raise ValueError(problem)
        return metadata
