"""Everything a user sets for a pool's policy: SLOs, per-role bounds and the algorithms' tunables.

These types are the single source of the tunables: the API embeds them in the
`LLMServingPool` spec (camelCase on the wire), so the CRD schema, its descriptions and bounds,
and the controllers' defaults cannot drift apart. Defaults are documented with their units and
are to be chosen by simulator sweeps (see docs/BENCHMARKS.md), not by taste.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Annotated, Final

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass

from chiron_operator.core.enums import Role

WIRE = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveSeconds = Annotated[float, Field(gt=0.0)]
NonNegativeSeconds = Annotated[float, Field(ge=0.0)]


@dataclass(frozen=True, config=WIRE)
class SloTargets:
    """Service-level objectives per request class."""

    interactive_ttft_s: PositiveSeconds = Field(
        default=2.0, description="Interactive time-to-first-token target, seconds."
    )
    interactive_itl_s: PositiveSeconds = Field(
        default=0.1, description="Interactive inter-token latency target, seconds."
    )
    percentile_ratio: float = Field(
        default=0.95,
        gt=0.5,
        lt=1.0,
        description="Percentile the latency targets apply to, as a ratio (0.95 = p95).",
    )
    batch_deadline_s: PositiveSeconds = Field(
        default=3600.0,
        description="Default batch deadline, seconds after submission, for requests without one.",
    )


@dataclass(frozen=True, config=WIRE)
class RoleBounds:
    """Per-role bounds on instance count and batch size (vLLM --max-num-seqs)."""

    min_replicas: int = Field(default=0, ge=0, description="Fewest instances of this role.")
    max_replicas: int = Field(default=8, ge=0, description="Most instances of this role.")
    min_batch_size_seqs: int = Field(
        default=1, ge=1, description="Smallest --max-num-seqs the local controller may set."
    )
    max_batch_size_seqs: int = Field(
        default=256, ge=1, description="Largest --max-num-seqs the local controller may set."
    )
    initial_batch_size_seqs: int = Field(
        default=64,
        ge=1,
        description="Batch size new pools and new roles start at: the gateway's first cap, or "
        "--max-num-seqs without a gateway.",
    )

    def deployment_seqs(self, fast_path: bool) -> int:
        """The --max-num-seqs a new Deployment of this role starts with.

        Without a gateway that is the batch size itself. With one it is only a ceiling the
        gateway caps pods under, so it starts at the role's max: no target the local controller
        may choose then needs a restart. Started at the initial size instead, the first burst
        met a 32-sequence interactive pod whose target had grown to 45 but waited two minutes
        for its restart while the gateway's queue grew (a generated 8B long-context day lost
        8% of its interactive requests in that one burst; docs/BENCHMARKS.md).
        """
        return self.max_batch_size_seqs if fast_path else self.initial_batch_size_seqs


_NO_BOUNDS: Final = RoleBounds(min_replicas=0, max_replicas=0)


@dataclass(frozen=True, config=WIRE)
class LocalTuning:
    """Local controller: batch size from latency (LBP) and throughput (TBP) backpressure."""

    itl_ewma_weight_ratio: Ratio = Field(
        default=0.3, description="Weight of the newest ITL sample in the EWMA."
    )
    itl_target_ratio: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Share of the ITL SLO the pods' mean ITL may reach before the batch shrinks; "
        "the rest is margin for requests slower than the mean.",
    )
    increase_max_ratio: float = Field(
        default=0.5,
        gt=0.0,
        le=4.0,
        description="Largest relative batch-size increase per step, reached as backpressure -> 0.",
    )
    increase_min_step_seqs: int = Field(
        default=1, ge=1, description="Smallest batch-size increase per step, sequences."
    )
    decrease_factor_ratio: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="Multiplier applied on backpressure >= 1."
    )
    saturation_ratio: Ratio = Field(
        default=0.9,
        description="Grow only when running/max-num-seqs reaches this (or requests wait).",
    )
    throughput_tolerance_ratio: Ratio = Field(
        default=0.05,
        description="Throughput drop after an increase tolerated as noise before TBP counts.",
    )


@dataclass(frozen=True, config=WIRE)
class RestartTuning:
    """Restart-aware layer: when a new --max-num-seqs is worth restarting pods for."""

    min_change_ratio: Ratio = Field(
        default=0.25, description="Relative change below which the applied batch size holds."
    )
    dwell_s: NonNegativeSeconds = Field(
        default=120.0, description="How long a target must persist before a restart, seconds."
    )
    urgent_dwell_s: NonNegativeSeconds = Field(
        default=30.0, description="Dwell for decreases forced by an ITL SLO breach, seconds."
    )
    min_interval_s: NonNegativeSeconds = Field(
        default=300.0, description="Least time between two restarts of a role, seconds."
    )
    max_restarts_per_hour: int = Field(
        default=4, ge=0, description="Restart budget per role over any sliding hour."
    )


@dataclass(frozen=True, config=WIRE)
class GlobalTuning:
    """Global controller: instance counts from interactive and batch backpressure."""

    ibp_low_ratio: Ratio = Field(
        default=0.1,
        description="Below this interactive backpressure, remove the instances the load does "
        "not need at the band's middle.",
    )
    ibp_high_ratio: Ratio = Field(
        default=0.7, description="Above this interactive backpressure, add mixed instances."
    )
    busy_running_ratio: Ratio = Field(
        default=0.3,
        description="An instance is busy when interactive running/max-num-seqs reaches this "
        "(it counts in proportion below, up to 1/this at its cap).",
    )
    bbp_threshold_ratio: Ratio = Field(
        default=0.0,
        description="Batch backpressure (share of groups missing deadline) above which to act.",
    )
    waiting_time_z: float = Field(
        default=2.33,
        ge=0.0,
        le=6.0,
        description="z of the waiting-time bound W_p = (n*mu + z*sigma*sqrt(n + n^2/m)) / "
        "throughput (m: completed requests mu was estimated from).",
    )
    mixed_idle_ratio: Ratio = Field(
        default=0.1,
        description="Mixed instances have idle capacity while running/max-num-seqs is below "
        "1 minus this.",
    )
    batch_scale_down_margin_ratio: Ratio = Field(
        default=0.7,
        description="Remove a batch instance only if deadlines hold within this share of the "
        "time left.",
    )
    batch_instance_prior_tokens_per_s: float = Field(
        default=2000.0,
        gt=0.0,
        description="Per-instance batch token throughput assumed before one is observed.",
    )
    throughput_ewma_weight_ratio: Ratio = Field(
        default=0.2, description="Weight of the newest per-instance throughput sample."
    )
    batch_output_tokens_prior: float = Field(
        default=256.0,
        gt=0.0,
        description="Least mean batch output length, tokens, until 30 batch requests have "
        "completed (the measured mean and spread are raised to it; with none measured it "
        "weighs like a few completions, with a spread as large as the mean).",
    )
    startup_prior_s: NonNegativeSeconds = Field(
        default=120.0,
        description="Time a new pod takes to become ready, assumed until the controller has "
        "seen one start, seconds.",
    )


@dataclass(frozen=True, config=WIRE)
class GuardTuning:
    """Guard rails around every policy (Chiron's and the baselines')."""

    max_scale_up_step_replicas: int = Field(
        default=4, ge=1, description="Most instances added to one role per tick."
    )
    max_scale_down_step_replicas: int = Field(
        default=1, ge=1, description="Most instances removed from one role per tick."
    )
    scale_up_cooldown_s: NonNegativeSeconds = Field(
        default=30.0, description="Least time between two scale-ups of a role, seconds."
    )
    scale_down_stabilization_s: NonNegativeSeconds = Field(
        default=300.0,
        description="Scale down only to the highest recommendation of this window, seconds.",
    )
    metrics_staleness_s: PositiveSeconds = Field(
        default=60.0, description="Samples older than this count as missing, seconds."
    )


def _default_bounds() -> dict[Role, RoleBounds]:
    return {
        # Interactive pods stop at 64: deeper, one slow prefill stalls every running answer
        # (sweep round 15's dominance rule; docs/TUNING.md has the figures).
        Role.INTERACTIVE: RoleBounds(
            min_replicas=1, max_replicas=8, max_batch_size_seqs=64, initial_batch_size_seqs=32
        ),
        Role.MIXED: RoleBounds(min_replicas=0, max_replicas=8, initial_batch_size_seqs=64),
        Role.BATCH: RoleBounds(
            min_replicas=0, max_replicas=8, max_batch_size_seqs=1024, initial_batch_size_seqs=256
        ),
    }


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class PoolTuning:
    """The whole configuration a Chiron policy decides under.

    `fast_path` says a gateway caps every pod at its role's target batch size (the local
    controller's fast path, no restart). --max-num-seqs is then only a ceiling: the
    restart-aware layer raises it when the target must go above it, and never lowers it.

    `rate_window_s` and `scrape_interval_s` are how the signals are measured (the pool's
    `prometheus.windowS` and `scrapeIntervalS`; the simulator's observation): the fast path
    waits for windows that lie wholly after a change before it moves that way again.
    """

    slo: SloTargets = field(default_factory=SloTargets)
    bounds: Mapping[Role, RoleBounds] = field(default_factory=_default_bounds)
    local: LocalTuning = field(default_factory=LocalTuning)
    restart: RestartTuning = field(default_factory=RestartTuning)
    global_scaling: GlobalTuning = field(default_factory=GlobalTuning)
    guards: GuardTuning = field(default_factory=GuardTuning)
    fast_path: bool = False
    rate_window_s: float = Field(default=60.0, gt=0.0)
    scrape_interval_s: float = Field(default=15.0, gt=0.0)

    def role_bounds(self, role: Role) -> RoleBounds:
        """Bounds for a role; a role without bounds may not run (max 0)."""
        # A shared constant: building (and validating) the default on every call showed up in
        # simulator profiles, and RoleBounds is frozen.
        return self.bounds.get(role, _NO_BOUNDS)
