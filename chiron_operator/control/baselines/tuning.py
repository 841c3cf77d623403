"""Tunings and states of the baseline autoscalers Chiron is benchmarked against (DESIGN.md s. 5).

Every baseline runs behind the same guard rails as Chiron; its `guards` default to the
baseline's own published behaviour (HPA's 300 s scale-down stabilisation and 15 s scale-up
period, KPA's and Llumnix's undamped loops), so "behind the same guard rails" does not quietly
make a baseline better or worse than the system it models. Where a baseline rate-limits in a way
the guards cannot express (HPA's "max(4 pods, 100%)"), the policy applies it and the guards'
step is left effectively unlimited.

Baselines route uniformly, so every instance serves both classes: that is the mixed role, and
it is the one role the default bounds scale. Tunings use the WIRE config (camelCase on the wire)
like core/tuning.py; states are plain frozen dataclasses persisted with core.state.to_wire.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Self

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from chiron_operator.core.enums import Role
from chiron_operator.core.state import GuardState
from chiron_operator.core.tuning import (
    WIRE,
    GuardTuning,
    NonNegativeSeconds,
    PositiveSeconds,
    RoleBounds,
)

# Replicas per tick: large enough never to bind, so the baseline's own rate rule is the limit.
UNLIMITED_STEP_REPLICAS = 1000

PositiveRatio = Annotated[float, Field(gt=0.0, le=1.0)]
ToleranceRatio = Annotated[float, Field(ge=0.0, lt=1.0)]


def baseline_bounds() -> dict[Role, RoleBounds]:
    """One mixed role, 1 to 8 instances: uniform routing makes every instance a mixed one."""
    return {Role.MIXED: RoleBounds(min_replicas=1, max_replicas=8, initial_batch_size_seqs=64)}


def undamped_guards() -> GuardTuning:
    """No cooldown, no stabilisation, no step limit: the policy alone sets the pace."""
    return GuardTuning(
        max_scale_up_step_replicas=UNLIMITED_STEP_REPLICAS,
        max_scale_down_step_replicas=UNLIMITED_STEP_REPLICAS,
        scale_up_cooldown_s=0.0,
        scale_down_stabilization_s=0.0,
    )


def hpa_guards() -> GuardTuning:
    """Kubernetes HPA's default behaviour: scale-down stabilised over 300 s and allowed to drop
    100% per 15 s; scale-up once per 15 s period (its size limit is the policy's)."""
    return GuardTuning(
        max_scale_up_step_replicas=UNLIMITED_STEP_REPLICAS,
        max_scale_down_step_replicas=UNLIMITED_STEP_REPLICAS,
        scale_up_cooldown_s=15.0,
        scale_down_stabilization_s=300.0,
    )


def _llumnix_guards() -> GuardTuning:
    return GuardTuning(
        max_scale_up_step_replicas=1,
        max_scale_down_step_replicas=1,
        scale_up_cooldown_s=0.0,
        scale_down_stabilization_s=0.0,
    )


_BOUNDS_DOC = "Per-role bounds; the baseline scales every role here with maxReplicas > 0."
_GUARDS_DOC = "Guard rails around the baseline, defaulting to the baseline's own behaviour."
_STEP_PODS_DOC = "HPA scale-up policy: instances that may be added per period, at least."
_STEP_RATIO_DOC = "HPA scale-up policy: share of current instances that may be added per period."


@dataclass(frozen=True, config=WIRE)
class StaticTuning:
    """Static provisioning: a fixed instance count per role (peak provisioning by default)."""

    bounds: Mapping[Role, RoleBounds] = Field(
        default_factory=baseline_bounds, description=_BOUNDS_DOC
    )
    guards: GuardTuning = Field(default_factory=undamped_guards, description=_GUARDS_DOC)
    replicas: Mapping[Role, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Instances per role; a role not listed runs at its maxReplicas (peak).",
    )

    def replicas_for(self, role: Role) -> int:
        """The fixed count for a role: the configured one, else the role's max (peak)."""
        bounds = self.bounds.get(role, RoleBounds(min_replicas=0, max_replicas=0))
        return self.replicas.get(role, bounds.max_replicas)


@dataclass(frozen=True, config=WIRE)
class HpaTuning:
    """Kubernetes HPA on vLLM KV-cache utilisation, with HPA's default behaviour."""

    bounds: Mapping[Role, RoleBounds] = Field(
        default_factory=baseline_bounds, description=_BOUNDS_DOC
    )
    guards: GuardTuning = Field(default_factory=hpa_guards, description=_GUARDS_DOC)
    target_kv_usage_ratio: PositiveRatio = Field(
        default=0.70, description="Mean KV-cache usage per ready instance the HPA aims for."
    )
    tolerance_ratio: ToleranceRatio = Field(
        default=0.10, description="Usage/target deviation from 1 within which nothing changes."
    )
    scale_up_limit_replicas: int = Field(default=4, ge=1, description=_STEP_PODS_DOC)
    scale_up_limit_ratio: float = Field(default=1.0, ge=0.0, description=_STEP_RATIO_DOC)


@dataclass(frozen=True, config=WIRE)
class KedaTuning:
    """KEDA (vLLM production-stack style) on queue length, with the HPA it drives underneath."""

    bounds: Mapping[Role, RoleBounds] = Field(
        default_factory=baseline_bounds, description=_BOUNDS_DOC
    )
    guards: GuardTuning = Field(default_factory=hpa_guards, description=_GUARDS_DOC)
    target_waiting_per_replica: float = Field(
        default=5.0, gt=0.0, description="Waiting requests per instance KEDA aims for, requests."
    )
    activation_waiting_requests: float = Field(
        default=0.0,
        ge=0.0,
        description="Total waiting requests at or below which the pool is idle (scaled to min).",
    )
    tolerance_ratio: ToleranceRatio = Field(
        default=0.10, description="Queue/target deviation from 1 within which nothing changes."
    )
    scale_up_limit_replicas: int = Field(default=4, ge=1, description=_STEP_PODS_DOC)
    scale_up_limit_ratio: float = Field(default=1.0, ge=0.0, description=_STEP_RATIO_DOC)


@dataclass(frozen=True, config=WIRE)
class KpaTuning:
    """Knative / AIBrix KPA on concurrency (running + waiting requests) with a panic mode."""

    bounds: Mapping[Role, RoleBounds] = Field(
        default_factory=baseline_bounds, description=_BOUNDS_DOC
    )
    guards: GuardTuning = Field(default_factory=undamped_guards, description=_GUARDS_DOC)
    target_concurrency_per_replica: float = Field(
        default=32.0,
        gt=0.0,
        description="In-flight requests (running + waiting) per instance the KPA aims for; "
        "half the mixed role's initial --max-num-seqs, to be swept.",
    )
    stable_window_s: PositiveSeconds = Field(
        default=60.0, description="Window the stable concurrency is averaged over, seconds."
    )
    panic_window_s: PositiveSeconds = Field(
        default=6.0, description="Window the panic concurrency is averaged over, seconds."
    )
    panic_threshold_ratio: float = Field(
        default=2.0,
        ge=1.0,
        description="Panic when the panic-window desired count reaches this multiple of the "
        "ready instances (Knative's 200%).",
    )
    max_scale_up_rate_ratio: float = Field(
        default=1000.0, ge=1.0, description="Desired count at most this multiple of ready ones."
    )
    max_scale_down_rate_ratio: float = Field(
        default=2.0, ge=1.0, description="Desired count at least ready instances over this."
    )

    @model_validator(mode="after")
    def _panic_within_stable(self) -> Self:
        if self.panic_window_s > self.stable_window_s:
            raise ValueError("panic_window_s must not exceed stable_window_s")
        return self


@dataclass(frozen=True, config=WIRE)
class LlumnixTuning:
    """Llumnix's auto-scaling on KV 'freeness' (free KV blocks per request).

    Freeness follows Llumnix's `remaining_steps` load: free KV blocks over running + waiting
    requests, aggregated over the role's instances. vLLM exports usage, not blocks, so free
    blocks are (1 - kv_cache_usage) x `kv_capacity_blocks`; the blocks queued requests will
    need are not exported, so they are not subtracted (the tuned sweep absorbs that bias).
    """

    bounds: Mapping[Role, RoleBounds] = Field(
        default_factory=baseline_bounds, description=_BOUNDS_DOC
    )
    guards: GuardTuning = Field(default_factory=_llumnix_guards, description=_GUARDS_DOC)
    scale_up_freeness_blocks: float = Field(
        default=10.0, description="Add an instance below this freeness, KV blocks per request."
    )
    scale_down_freeness_blocks: float = Field(
        default=60.0,
        description="Remove an instance while freeness without it stays above this, KV blocks "
        "per request.",
    )
    scaling_interval_s: NonNegativeSeconds = Field(
        default=10.0, description="Least time between two freeness checks, seconds."
    )
    kv_capacity_blocks: int = Field(
        default=24_000,
        gt=0,
        description="KV-cache blocks (16 tokens) per instance; about Llama-3.1-8B in bf16 on "
        "an 80 GB GPU at 0.9 memory utilisation (128 KiB of KV per token).",
    )

    @model_validator(mode="after")
    def _band_is_ordered(self) -> Self:
        if self.scale_up_freeness_blocks >= self.scale_down_freeness_blocks:
            raise ValueError("scale_up_freeness_blocks must be below scale_down_freeness_blocks")
        return self


@dataclasses.dataclass(frozen=True, slots=True)
class BaselineState:
    """Memory of a baseline that keeps nothing but its guard rails' (static, HPA, KEDA)."""

    guards: Mapping[Role, GuardState] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class KpaRoleState:
    """KPA memory for one role.

    `samples` are (time s, observed concurrency in requests), pruned to the stable window;
    `panic_since_s` is the last time the panic threshold was crossed (None: not panicking);
    `max_panic_replicas` is the highest count asked for during the current panic.
    """

    samples: tuple[tuple[float, float], ...] = ()
    panic_since_s: float | None = None
    max_panic_replicas: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class KpaState:
    """KPA memory: per-role windows and panic, plus the guard rails'."""

    guards: Mapping[Role, GuardState] = dataclasses.field(default_factory=dict)
    roles: Mapping[Role, KpaRoleState] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class LlumnixState:
    """Llumnix memory: when freeness was last checked (None: never), plus the guard rails'."""

    guards: Mapping[Role, GuardState] = dataclasses.field(default_factory=dict)
    last_check_s: float | None = None
