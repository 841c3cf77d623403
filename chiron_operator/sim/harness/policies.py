"""The benchmark's policy roster: Chiron and every baseline, configured for one scenario.

- `chiron`: the pool's own tuning (`pool:` of the scenario) with its gateway: requests routed
  by the product's routing core (`sim.dispatcher`), pods capped at the local controller's
  target batch size (the fast path: `PoolTuning.fast_path`, as `spec.gateway.enabled` sets
  it), starting at the scenario's initial replicas.
- `chiron-services`: the same controllers and pool without the gateway: plain Services
  (`sim.services`), so batch sizes change only by restarting pods and the operator sees no
  batch queue.
- The baselines route uniformly over one mixed role (every instance serves both classes, FCFS)
  and keep --max-num-seqs fixed. Same bounds for all: the mixed role may run between the
  pool's total minimum (at least 1) and total maximum instances, so a baseline can use exactly
  the GPUs Chiron can; its fixed batch size is the pool's mixed `initialBatchSizeSeqs` (the
  size Chiron gives an instance serving both classes), and it starts with as many instances as
  Chiron starts with in total.
  - `static`: peak provisioning with hindsight: a fixed count, ready from the start, chosen by
    `static_search.static_search` as the fewest instances reaching the target on the training seed;
  - `hpa`, `keda`, `kpa`: their documented defaults (KPA's target concurrency is half the fixed
    batch size, as its default is for the default bounds);
  - `llumnix`: Llumnix's default freeness thresholds; `llumnix-tuned`: thresholds chosen per
    scenario by `sweep_llumnix` on a training seed (see `bench`). Both read the profile's real
    KV capacity in blocks.

`PolicySpec` names a roster entry with its parameters: it is what crosses process boundaries
(workers rebuild the policy from it), so it holds plain values only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from chiron_operator.control import chiron
from chiron_operator.control.baselines import BASELINES, BaselineParams, build_baseline, scheduled
from chiron_operator.control.baselines.scheduled import ScheduleTuning, scheduled_count
from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.enums import Role
from chiron_operator.core.tuning import RoleBounds
from chiron_operator.perfmodel.profiles import KV_BLOCK_TOKENS
from chiron_operator.sim.router import RoutingMode
from chiron_operator.sim.scenario import Scenario, ScenarioPool
from chiron_operator.sim.sourcefile import UsageError

CHIRON: Final = "chiron"
CHIRON_SERVICES: Final = "chiron-services"
STATIC: Final = "static"
HINDSIGHT: Final = "hindsight"
LLUMNIX_TUNED: Final = "llumnix-tuned"
ROSTER: Final = (CHIRON, CHIRON_SERVICES, *BASELINES)
# Chiron's roster entries: whether the pool runs its gateway, and how requests reach pods then.
_CHIRON_ROUTING: Final = {CHIRON: RoutingMode.CHIRON, CHIRON_SERVICES: RoutingMode.SERVICES}


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A roster entry and its parameters.

    `static_replicas` sizes `static`; `freeness` = (scale-up, scale-down) thresholds of
    `llumnix-tuned`; `schedule` ((start_s, instances) steps), `lead_s` and `factor` (the
    search's scale of the fluid need it came from) describe a `hindsight` candidate;
    `overrides` are Chiron pool overrides as (wire path, value) pairs, e.g.
    ("global.ibpHighRatio", 0.7), for sweeps (see `with_overrides`, which `defaults_only`
    is passed to).
    """

    name: str
    static_replicas: int | None = None
    freeness: tuple[float, float] | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    defaults_only: bool = False
    schedule: tuple[tuple[float, int], ...] = ()
    lead_s: float = 0.0
    factor: float | None = None

    @property
    def label(self) -> str:
        """The name the results are reported under."""
        return self.name


@dataclass(frozen=True, slots=True)
class PolicySetup:
    """Everything a run of one policy on one scenario needs besides the workload.

    `scenario` is the one to run: the given scenario with the policy's overrides applied, so
    that an override of the SLOs or the control interval reaches the simulator too, not only
    the policy's tuning.
    """

    name: str
    scenario: Scenario
    policy: BoundPolicy[Any, Any]
    routing: RoutingMode
    bounds: Mapping[Role, RoleBounds]
    initial_replicas: Mapping[Role, int]


def baseline_bounds(scenario: Scenario) -> dict[Role, RoleBounds]:
    """One mixed role with the pool's total instance bounds and the mixed role's batch size."""
    bounds = scenario.bounds()
    mixed = bounds[Role.MIXED]
    return {
        Role.MIXED: RoleBounds(
            min_replicas=max(1, sum(b.min_replicas for b in bounds.values())),
            max_replicas=max(1, sum(b.max_replicas for b in bounds.values())),
            min_batch_size_seqs=mixed.initial_batch_size_seqs,
            max_batch_size_seqs=mixed.initial_batch_size_seqs,
            initial_batch_size_seqs=mixed.initial_batch_size_seqs,
        )
    }


def baseline_initial_replicas(scenario: Scenario) -> dict[Role, int]:
    """As many mixed instances as Chiron starts with in total."""
    return {Role.MIXED: sum(scenario.starting_replicas().values())}


def kv_capacity_blocks(scenario: Scenario) -> int:
    return max(1, scenario.latency.kv_capacity_tokens // KV_BLOCK_TOKENS)


POOL_SECTIONS: Final = ("slo", "roles", "tuning", "control", "gateway")


def with_overrides(
    scenario: Scenario, overrides: Sequence[tuple[str, Any]], *, defaults_only: bool = False
) -> Scenario:
    """The scenario with pool overrides applied, validated like a pool spec.

    Paths are wire names under the scenario's `pool` (`roles.mixed.initialBatchSizeSeqs`); a
    path not starting with one of its sections is under `tuning` (`global.ibpHighRatio`).
    With `defaults_only`, a value the scenario sets to something other than the default is
    kept: that is how changing a default would change it (sweeps of defaults use this).
    """
    if not overrides:
        return scenario
    data = scenario.model_dump(by_alias=True, mode="json")
    defaults = ScenarioPool().model_dump(by_alias=True, mode="json")
    for path, value in overrides:
        parts = path.split(".")
        if parts[0] not in POOL_SECTIONS:
            parts = ["tuning", *parts]
        if defaults_only and _lookup(data["pool"], parts) != _lookup(defaults, parts):
            continue
        node = data["pool"]
        *parents, leaf = parts
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return Scenario.model_validate(data)


def _lookup(data: Mapping[str, Any], parts: Sequence[str]) -> Any:
    node: Any = data
    for name in parts:
        if not isinstance(node, Mapping) or name not in node:
            return None
        node = node[name]
    return node


def setup(scenario: Scenario, spec: PolicySpec) -> PolicySetup:
    """The runnable setup of roster entry `spec` on `scenario`."""
    routing = _CHIRON_ROUTING.get(spec.name)
    if routing is not None:
        tuned = with_overrides(scenario, spec.overrides, defaults_only=spec.defaults_only)
        # The gateway caps pods at the target batch size; without it only restarts apply it.
        tuning = replace(tuned.tuning(), fast_path=routing is RoutingMode.CHIRON)
        bound = replace(chiron.bound(tuning), name=spec.name)
        return PolicySetup(
            spec.name, tuned, bound, routing, tuned.bounds(), tuned.starting_replicas()
        )
    bounds = baseline_bounds(scenario)
    if spec.name == HINDSIGHT:
        return _hindsight(scenario, spec, bounds)
    policy = _baseline(scenario, spec, bounds)
    initial = baseline_initial_replicas(scenario)
    if spec.name == STATIC:
        # Static provisioning has its capacity from the start: that is what it pays for.
        initial = {Role.MIXED: policy.tuning.replicas_for(Role.MIXED)}
    return PolicySetup(spec.label, scenario, policy, RoutingMode.UNIFORM, bounds, initial)


def _hindsight(scenario: Scenario, spec: PolicySpec, bounds: dict[Role, RoleBounds]) -> PolicySetup:
    """A candidate schedule of the hindsight reference (`hindsight`): one mixed role behind
    the gateway's routing, its first need ready from the start."""
    if not spec.schedule:
        raise UsageError("hindsight needs a schedule (see sim.harness.hindsight)")
    tuning = ScheduleTuning(bounds=bounds, steps={Role.MIXED: spec.schedule}, lead_s=spec.lead_s)
    initial = {Role.MIXED: scheduled_count(spec.schedule, 0.0, spec.lead_s)}
    policy = scheduled.bound(tuning)
    return PolicySetup(spec.label, scenario, policy, RoutingMode.CHIRON, bounds, initial)


def _baseline(
    scenario: Scenario, spec: PolicySpec, bounds: dict[Role, RoleBounds]
) -> BoundPolicy[Any, Any]:
    if spec.name not in BASELINES:
        raise UsageError(f"unknown policy {spec.name!r}; known: {', '.join(ROSTER)}")
    if spec.name == STATIC and spec.static_replicas is None:
        raise UsageError("static needs static_replicas (the oracle's peak)")
    mixed = bounds[Role.MIXED]
    static_replicas = min(max(spec.static_replicas or 1, 1), mixed.max_replicas)
    params = BaselineParams(
        bounds=bounds,
        static_replicas={Role.MIXED: static_replicas},
        target_concurrency_per_replica=mixed.initial_batch_size_seqs / 2,
        kv_capacity_blocks=kv_capacity_blocks(scenario),
        freeness_blocks=spec.freeness,
    )
    return build_baseline(spec.name, params)


# Freeness is free KV blocks per in-flight request; with a fixed batch size it sits in the
# hundreds of blocks on an 80 GB GPU, so the defaults (10/60) only react to a full KV cache.
# The grid spans the range an instance actually moves through: from a nearly full cache up to
# an eighth of an 8B A100 instance's ~27,000 blocks per request, past which the threshold
# would add instances to a pool with a single request in flight.
LLUMNIX_GRID_UP: Final = (25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)
LLUMNIX_GRID_DOWN_FACTORS: Final = (2.0, 4.0)
LLUMNIX_QUICK_GRID_UP: Final = (50.0, 200.0, 800.0, 3200.0)
LLUMNIX_QUICK_GRID_DOWN_FACTORS: Final = (2.0,)


def llumnix_grid(*, quick: bool) -> list[tuple[float, float]]:
    """The (scale-up, scale-down) freeness thresholds the tuned Llumnix is chosen from."""
    ups = LLUMNIX_QUICK_GRID_UP if quick else LLUMNIX_GRID_UP
    factors = LLUMNIX_QUICK_GRID_DOWN_FACTORS if quick else LLUMNIX_GRID_DOWN_FACTORS
    return [(up, up * factor) for up in ups for factor in factors]


def roster(
    scenario: Scenario, *, static_replicas: int, llumnix_freeness: tuple[float, float]
) -> list[PolicySpec]:
    """Every policy of the benchmark for one scenario, Chiron first (with its gateway, then
    without)."""
    del scenario  # every entry applies to every scenario; kept for symmetry with setup()
    specs = {
        STATIC: PolicySpec(STATIC, static_replicas=static_replicas),
        LLUMNIX_TUNED: PolicySpec(LLUMNIX_TUNED, freeness=llumnix_freeness),
    }
    chirons = [PolicySpec(CHIRON), PolicySpec(CHIRON_SERVICES)]
    return [*chirons, *(specs.get(name, PolicySpec(name)) for name in BASELINES)]
