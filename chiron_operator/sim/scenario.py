"""Benchmark scenarios: one YAML file says what runs (model, GPU, cold starts, workload) and
how the pool is configured, in the same words as a real `LLMServingPool`.

A scenario's `pool:` section reuses the spec's camelCase `slo`, `roles`, `tuning`, `control`
and `gateway` sections through the API models themselves (`chiron_operator.api`), so a
scenario's pool is validated by the same rules as a real pool and can be copied into one.
Everything else is camelCase too:

```yaml
name: conv-interactive
description: Interactive chat on the Azure conv trace.
profile: llama31-8b-a100          # sim.profiles name (model, GPU, TP)
coldStart: 8b-warm                # sim.coldstart preset, or seconds
tensorParallelSize: 1             # GPUs per instance (must match the profile)
horizonS: 3600
initialReplicas: {interactive: 2} # where the pool starts (ready at t=0); default: role minimums
simulation: {scrapeIntervalS: 15, scrapeDelayS: 5, windowS: 60}
engine: {chunkedPrefill: true}    # vLLM's scheduler; maxNumBatchedTokens defaults per GPU;
                                  # preemptForPriority: true models vLLM with issue 40004 fixed
workload:
  - {kind: azure, trace: conv, rateScale: 4}
  - {kind: batch, count: 2000, source: arxiv, submitS: 300, deadlineS: 3600}
quick:                            # the --quick variant: replaces horizon and workload
  horizonS: 900
  workload: [{kind: azure, trace: conv, rateScale: 4, startS: 1200, durationS: 900}]
pool:
  slo: {interactiveTtftS: 2, interactiveItlS: 0.1}
  roles: {interactive: {minReplicas: 1, maxReplicas: 8}}
  tuning: {global: {ibpHighRatio: 0.8}}
  control: {intervalS: 15}
```

The workload parts (`kind`) are modelled in `chiron_operator.sim.workload_parts`; a user's
own traffic is `{kind: trace, path: FILE}` (formats in `chiron_operator.sim.traces`; a relative
path is read from the scenario file's directory). Each part draws from its own Generator
spawned from the run's seed, so a workload is a pure function of (scenario, seed). A file that
cannot be used (YAML, schema or trace) raises a `sourcefile.SourceError` naming its line and
column. This module holds the scenario's other sections, loading, and what a run is
built from: its workload (`build_workload`) and its `SimConfig` (`build_config`).

Baselines run the same scenario with uniform routing over one mixed role; their bounds are
derived from the pool's in `chiron_operator.sim.harness.policies`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Final, Self

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from chiron_operator.api.base import SpecModel
from chiron_operator.api.gateway import GatewaySpec
from chiron_operator.api.spec import ControlSpec, RolesSpec, TuningSpec, pool_tuning
from chiron_operator.core.enums import Role
from chiron_operator.core.tuning import PoolTuning, RoleBounds, SloTargets
from chiron_operator.perfmodel.coldstart import ColdStartModel, cold_start, cold_start_names
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.perfmodel.profiles import SPECS, profile, profile_names
from chiron_operator.perfmodel.vllm_defaults import EngineSpec, profile_max_num_batched_tokens
from chiron_operator.routing import DEADLINE_BUCKET_S, RoutingTuning
from chiron_operator.sim import workloads
from chiron_operator.sim.config import SimConfig, StepMode
from chiron_operator.sim.requests import RequestSpec
from chiron_operator.sim.router import RoutingMode
from chiron_operator.sim.sourcefile import located, read_yaml_mapping
from chiron_operator.sim.traces import read_trace
from chiron_operator.sim.workload_parts import (
    BASE_DIR,
    NonNegativeFloat,
    PositiveFloat,
    TracePart,
    WorkloadPart,
)

SCENARIO_DIR: Final = Path(__file__).parent / "scenarios"


class SimulationSpec(SpecModel):
    """How the simulated pool is observed and actuated (see `SimConfig`)."""

    scrape_interval_s: PositiveFloat = 15.0
    scrape_delay_s: NonNegativeFloat = 5.0
    window_s: PositiveFloat = 60.0
    actuation_delay_s: NonNegativeFloat = 0.0
    drain_grace_s: NonNegativeFloat = 30.0
    deadline_bucket_s: PositiveFloat = DEADLINE_BUCKET_S
    expose_class_split: bool = Field(
        default=False,
        description="Give controllers the per-class split of each pod's load, which real vLLM "
        "does not export (keep false to measure what ships).",
    )


class ScenarioPool(SpecModel):
    """The pool's policy configuration, exactly as in an `LLMServingPool` spec."""

    slo: SloTargets = SloTargets()
    roles: RolesSpec = RolesSpec()
    tuning: TuningSpec = TuningSpec()
    control: ControlSpec = ControlSpec()
    # Only its routing tunables apply: the policy, not this section, says whether a gateway runs.
    gateway: GatewaySpec = GatewaySpec()

    def to_tuning(self) -> PoolTuning:
        """The policy configuration, as `LLMServingPoolSpec.to_tuning()` builds it."""
        return pool_tuning(self.slo, self.roles, self.tuning)

    def routing_tuning(self) -> RoutingTuning:
        """The gateway's routing tunables, as `chiron-gateway` gets them from `spec.gateway`."""
        gateway = self.gateway
        return RoutingTuning(
            max_queued_interactive=gateway.max_queued_requests,
            max_queue_wait_s=gateway.max_queue_wait_s,
            mixed_reserve_slots=gateway.mixed_reserve_slots,
            preempt_batch=gateway.preempt_batch,
            batch_on_interactive=gateway.batch_on_interactive,
            interactive_reserve_slots=gateway.interactive_reserve_slots,
            batch_prefills_per_pod=gateway.batch_prefills_per_pod,
        )


class QuickVariant(SpecModel):
    """What `--quick` replaces: a shorter horizon, a smaller workload and the starting pool
    (a window cut from the middle of a trace starts at a different load)."""

    horizon_s: PositiveFloat | None = None
    workload: list[WorkloadPart] | None = None
    initial_replicas: dict[Role, Annotated[int, Field(ge=0)]] | None = None


class Scenario(SpecModel):
    """One benchmark scenario (see the module docstring for the YAML)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=63)
    description: str = ""
    profile: str
    cold_start: str | PositiveFloat = "8b-warm"
    tensor_parallel_size: int = Field(default=1, ge=1)
    horizon_s: PositiveFloat
    initial_replicas: dict[Role, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    simulation: SimulationSpec = SimulationSpec()
    engine: EngineSpec = EngineSpec()
    workload: list[WorkloadPart] = Field(min_length=1)
    quick: QuickVariant | None = None
    pool: ScenarioPool = ScenarioPool()

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        if name not in profile_names():
            raise ValueError(f"unknown profile {name!r}; known: {', '.join(profile_names())}")
        return name

    @field_validator("cold_start")
    @classmethod
    def _known_cold_start(cls, value: str | float) -> str | float:
        if isinstance(value, str) and value not in cold_start_names():
            known = ", ".join(cold_start_names())
            raise ValueError(f"unknown cold-start preset {value!r}; known: {known}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        tp = next(s.tp for s in SPECS if s.name == self.profile)
        if tp != self.tensor_parallel_size:
            raise ValueError(
                f"tensorParallelSize {self.tensor_parallel_size} does not match profile "
                f"{self.profile} (TP{tp})"
            )
        bounds = self.pool.roles.bounds()
        for role, count in self.initial_replicas.items():
            if not bounds[role].min_replicas <= count <= bounds[role].max_replicas:
                raise ValueError(
                    f"initialReplicas.{role.value} = {count} is outside the role's bounds "
                    f"[{bounds[role].min_replicas}, {bounds[role].max_replicas}]"
                )
        return self

    def variant(self, *, quick: bool) -> Scenario:
        """The scenario itself, or its quick variant (horizon and workload replaced)."""
        if not quick or self.quick is None:
            return self
        changes: dict[str, Any] = {"quick": None}
        if self.quick.horizon_s is not None:
            changes["horizon_s"] = self.quick.horizon_s
        if self.quick.workload is not None:
            changes["workload"] = self.quick.workload
        if self.quick.initial_replicas is not None:
            changes["initial_replicas"] = self.quick.initial_replicas
        return Scenario.model_validate({**self.model_dump(by_alias=True), **_wire(changes)})

    @cached_property
    def latency(self) -> LatencyModel:
        """The scenario's latency model."""
        return profile(self.profile)

    def cold_start_model(self) -> ColdStartModel | float:
        """The cold-start preset, or a fixed delay in seconds."""
        if isinstance(self.cold_start, str):
            return cold_start(self.cold_start)
        return float(self.cold_start)

    def tuning(self) -> PoolTuning:
        """Chiron's tuning for this scenario's pool, reading signals as the scenario observes."""
        sim = self.simulation
        return replace(
            self.pool.to_tuning(),
            rate_window_s=sim.window_s,
            scrape_interval_s=sim.scrape_interval_s,
        )

    def bounds(self) -> dict[Role, RoleBounds]:
        """The pool's per-role bounds."""
        return self.pool.roles.bounds()

    def starting_replicas(self) -> dict[Role, int]:
        """Initial ready pods per role: as configured, else each role's minimum."""
        bounds = self.bounds()
        return {r: self.initial_replicas.get(r, bounds[r].min_replicas) for r in Role}

    @property
    def max_num_batched_tokens(self) -> int:
        """The pods' step budget: as configured, else vLLM's default for the profile's GPU."""
        configured = self.engine.max_num_batched_tokens
        return configured if configured else profile_max_num_batched_tokens(self.profile)

    @property
    def control_interval_s(self) -> float:
        return self.pool.control.interval_s


def _wire(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Field names to their camelCase aliases, values dumped like the model's."""
    fields = Scenario.model_fields
    out: dict[str, Any] = {}
    for name, value in changes.items():
        alias = fields[name].alias or name
        if isinstance(value, list):
            out[alias] = [
                v.model_dump(by_alias=True) if isinstance(v, SpecModel) else v for v in value
            ]
        else:
            out[alias] = value
    return out


def load_scenario(path: str | Path) -> Scenario:
    """Parse a scenario file; a bare name (no suffix, no directory) means a packaged one.

    Trace files are read now, so that a bad one fails here with its own line, not mid-run.
    """
    candidate = Path(path)
    if not candidate.exists() and candidate.suffix == "" and candidate.parent == Path():
        candidate = SCENARIO_DIR / f"{candidate.name}.yaml"
    data, root = read_yaml_mapping(candidate, "a scenario")
    try:
        scenario = Scenario.model_validate(data, context={BASE_DIR: candidate.parent})
    except ValidationError as error:
        raise located(candidate, root, error) from None
    quick_parts = (scenario.quick.workload or []) if scenario.quick else []
    for part in (*scenario.workload, *quick_parts):
        if isinstance(part, TracePart):
            read_trace(part.path)
    return scenario


def packaged_scenarios() -> list[Path]:
    """The benchmark suite's scenario files, in name order."""
    return sorted(SCENARIO_DIR.glob("*.yaml"))


def build_workload(scenario: Scenario, seed: int = 0) -> list[RequestSpec]:
    """Every request of the scenario, sorted by arrival and numbered 0..n-1.

    Each part draws from its own Generator spawned from `seed`, so adding a part never changes
    the requests of the others.
    """
    streams = np.random.SeedSequence(seed).spawn(len(scenario.workload))
    parts = [
        _generate(part, np.random.default_rng(stream), scenario)
        for part, stream in zip(scenario.workload, streams, strict=True)
    ]
    return workloads.merge(*parts, renumber=True)


def _generate(
    part: WorkloadPart, rng: np.random.Generator, scenario: Scenario
) -> list[RequestSpec]:
    if isinstance(part, TracePart):
        # A batch row without a deadline gets the pool's default, as the gateway gives it.
        return part.generate(rng, default_deadline_s=scenario.pool.slo.batch_deadline_s)
    return part.generate(rng)


def build_config(
    scenario: Scenario,
    *,
    seed: int = 0,
    routing: RoutingMode = RoutingMode.CHIRON,
    bounds: Mapping[Role, RoleBounds] | None = None,
    initial_replicas: Mapping[Role, int] | None = None,
    step_mode: StepMode = StepMode.FAST,
) -> SimConfig:
    """The SimConfig of one run of `scenario`.

    `bounds` default to the pool's; pods start with the --max-num-seqs the operator gives a
    new Deployment (`RoleBounds.deployment_seqs`: the ceiling behind the gateway, else the
    initial batch size; what the policy's first tick also assumes, so nothing restarts) and at
    `initial_replicas` (default: the scenario's starting point), clamped to the bounds.
    """
    chosen = dict(scenario.bounds() if bounds is None else bounds)
    starting = scenario.starting_replicas() if initial_replicas is None else initial_replicas
    replicas = {r: _clamp(starting.get(r, 0), chosen.get(r)) for r in Role}
    gateway = routing is RoutingMode.CHIRON
    seqs = {r: b.deployment_seqs(gateway) for r, b in chosen.items()}
    sim = scenario.simulation
    return SimConfig(
        latency=scenario.latency,
        cold_start=scenario.cold_start_model(),
        horizon_s=scenario.horizon_s,
        initial_replicas=replicas,
        initial_max_num_seqs=seqs,
        tensor_parallel_size=scenario.tensor_parallel_size,
        routing=routing,
        routing_tuning=scenario.pool.routing_tuning(),
        step_mode=step_mode,
        seed=seed,
        slo=scenario.pool.slo,
        control_interval_s=scenario.control_interval_s,
        scrape_interval_s=sim.scrape_interval_s,
        scrape_delay_s=sim.scrape_delay_s,
        window_s=sim.window_s,
        actuation_delay_s=sim.actuation_delay_s,
        drain_grace_s=sim.drain_grace_s,
        deadline_bucket_s=sim.deadline_bucket_s,
        expose_class_split=sim.expose_class_split,
        chunked_prefill=scenario.engine.chunked_prefill,
        max_num_batched_tokens=scenario.max_num_batched_tokens,
        preempt_for_priority=scenario.engine.preempt_for_priority,
    )


def _clamp(count: int, bounds: RoleBounds | None) -> int:
    if bounds is None:
        return 0
    return min(max(count, bounds.min_replicas), bounds.max_replicas)


def describe_workload(workload: Sequence[RequestSpec]) -> dict[str, float]:
    """Counts and token totals of a workload, for reports."""
    interactive = [r for r in workload if r.deadline_s is None]
    batch = [r for r in workload if r.deadline_s is not None]
    return {
        "requests": float(len(workload)),
        "interactive_requests": float(len(interactive)),
        "batch_requests": float(len(batch)),
        "interactive_output_tokens": float(sum(r.output_tokens for r in interactive)),
        "batch_output_tokens": float(sum(r.output_tokens for r in batch)),
    }
