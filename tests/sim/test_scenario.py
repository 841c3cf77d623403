"""Scenario files: the packaged suite, the schema's rules, workloads and run configurations."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.perfmodel.coldstart import ColdStartModel
from chiron_operator.sim.harness.policies import (
    PolicySpec,
    baseline_bounds,
    baseline_initial_replicas,
    setup,
    with_overrides,
)
from chiron_operator.sim.router import RoutingMode
from chiron_operator.sim.scenario import (
    Scenario,
    build_config,
    build_workload,
    load_scenario,
    packaged_scenarios,
)

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny-mixed.yaml"
SUITE = {p.stem: p for p in packaged_scenarios()}


def tiny_data() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TINY.read_text())
    return loaded


def edited(changes: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(tiny_data())
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = data
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return data


def test_the_suite_has_the_issues_scenarios() -> None:
    assert set(SUITE) >= {
        "conv-interactive",
        "code-bursty",
        "conv-batch-deadline",
        "llama70b-tp4",
        "overload-burst",
    }


@pytest.mark.parametrize("name", sorted(SUITE))
def test_every_packaged_scenario_and_its_quick_variant_load(name: str) -> None:
    scenario = load_scenario(SUITE[name])
    assert scenario.name == name  # file name and scenario name agree
    quick = scenario.variant(quick=True)
    assert quick.quick is None and quick.horizon_s <= scenario.horizon_s
    assert quick.horizon_s <= 1000.0  # the quick suite must stay quick
    assert load_scenario(name) == scenario  # a bare name finds the packaged file


def test_the_batch_scenario_has_a_one_hour_deadline_on_8b_a100() -> None:
    scenario = load_scenario("conv-batch-deadline")
    batch = [p for p in scenario.workload if p.kind == "batch"]
    assert batch and all(p.deadline_s == 3600.0 for p in batch)
    assert scenario.profile == "llama31-8b-a100"


def test_the_70b_scenario_is_tensor_parallel_with_minutes_of_cold_start() -> None:
    scenario = load_scenario("llama70b-tp4")
    assert scenario.tensor_parallel_size == 4
    model = scenario.cold_start_model()
    assert isinstance(model, ColdStartModel) and model.low_s >= 120.0


def test_the_overload_burst_exceeds_what_max_replicas_can_serve() -> None:
    scenario = load_scenario("overload-burst")
    bounds = scenario.bounds()
    most = sum(b.max_replicas for b in bounds.values())
    burst = next(p for p in scenario.workload if p.kind == "burst")
    assert burst.peak_rate_per_s >= 5 * most  # several times what 4 pods serve (~2-4 req/s)


def test_the_pool_section_reads_like_a_pool_spec() -> None:
    scenario = load_scenario(TINY)
    tuning = scenario.tuning()
    assert tuning.slo.batch_deadline_s == 240.0
    assert tuning.role_bounds(Role.BATCH).max_batch_size_seqs == 512
    # Role fields left out take that role's defaults, as in a real pool.
    assert tuning.role_bounds(Role.MIXED).initial_batch_size_seqs == 64
    assert scenario.control_interval_s == 15.0


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"pool.roles.mixed.minReplicas": 3}, "spec.roles.mixed.minReplicas"),  # pool's own rule
        ({"pool.tuning.global.ibpHighRatio": 0.05}, "ibpHighRatio"),
        ({"pool.slo.interactiveTtft": 2.0}, "interactiveTtft"),  # unknown field: a typo
        ({"profile": "llama-9000"}, "unknown profile"),
        ({"coldStart": "slow"}, "unknown cold-start preset"),
        ({"tensorParallelSize": 4}, "does not match profile"),
        ({"initialReplicas": {"interactive": 5}}, "outside the role's bounds"),
        ({"workload": []}, "workload"),
        ({"workload": [{"kind": "zipf"}]}, "zipf"),
        ({"name": "Not A Name"}, "name"),
    ],
)
def test_invalid_scenarios_are_rejected_with_the_field(
    changes: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Scenario.model_validate(edited(changes))


def test_build_workload_is_deterministic_sorted_and_numbered() -> None:
    scenario = load_scenario(TINY)
    first = build_workload(scenario, seed=3)
    assert first == build_workload(scenario, seed=3)
    assert first != build_workload(scenario, seed=4)
    assert [r.request_id for r in first] == list(range(len(first)))
    assert [r.arrival_s for r in first] == sorted(r.arrival_s for r in first)
    batch = [r for r in first if r.request_class is RequestClass.BATCH]
    assert len(batch) == 60
    assert all(r.arrival_s == 30.0 and r.deadline_s == 270.0 for r in batch)


def test_parts_draw_from_their_own_streams() -> None:
    # Adding a part never changes the requests the others generate.
    alone = Scenario.model_validate(edited({"workload": [tiny_data()["workload"][0]]}))
    both = load_scenario(TINY)
    interactive = [
        (r.arrival_s, r.prompt_tokens)
        for r in build_workload(both, 0)
        if r.request_class is RequestClass.INTERACTIVE
    ]
    assert interactive == [(r.arrival_s, r.prompt_tokens) for r in build_workload(alone, 0)]


def test_azure_parts_cut_a_window_and_offset_it() -> None:
    part = {"kind": "azure", "trace": "conv", "startS": 600, "durationS": 60, "offsetS": 100}
    scenario = Scenario.model_validate(edited({"workload": [part]}))
    workload = build_workload(scenario)
    assert workload and all(100.0 <= r.arrival_s < 160.0 for r in workload)


def test_quick_variant_replaces_horizon_workload_and_start() -> None:
    data = edited({"quick.initialReplicas": {"interactive": 2}})
    quick = Scenario.model_validate(data).variant(quick=True)
    assert quick.horizon_s == 150.0
    assert [p.kind for p in quick.workload] == ["poisson", "batch"]
    assert quick.starting_replicas()[Role.INTERACTIVE] == 2
    assert Scenario.model_validate(data).variant(quick=False).horizon_s == 300.0


def test_build_config_starts_pods_at_the_deployment_ceiling() -> None:
    scenario = load_scenario(TINY)
    config = build_config(scenario, seed=5)
    bounds = scenario.bounds()
    # Behind the gateway a new Deployment runs the role's max: the gateway caps it.
    assert dict(config.initial_max_num_seqs) == {
        r: b.max_batch_size_seqs for r, b in bounds.items()
    }
    assert any(b.max_batch_size_seqs != b.initial_batch_size_seqs for b in bounds.values())
    plain = build_config(scenario, seed=5, routing=RoutingMode.SERVICES)
    assert dict(plain.initial_max_num_seqs) == {
        r: b.initial_batch_size_seqs for r, b in bounds.items()
    }
    assert dict(config.initial_replicas) == {Role.INTERACTIVE: 1, Role.MIXED: 0, Role.BATCH: 0}
    assert config.seed == 5 and config.horizon_s == 300.0
    assert config.control_interval_s == 15.0
    assert config.slo == scenario.pool.slo
    assert config.routing is RoutingMode.CHIRON and not config.expose_class_split


def test_baselines_get_the_pools_total_bounds_on_one_mixed_role() -> None:
    scenario = load_scenario(TINY)
    bounds = baseline_bounds(scenario)
    assert set(bounds) == {Role.MIXED}
    assert (bounds[Role.MIXED].min_replicas, bounds[Role.MIXED].max_replicas) == (1, 4)
    assert bounds[Role.MIXED].initial_batch_size_seqs == 64  # the mixed role's
    assert baseline_initial_replicas(scenario) == {Role.MIXED: 1}
    chosen = setup(scenario, PolicySpec("hpa"))
    config = build_config(
        scenario, routing=chosen.routing, bounds=chosen.bounds,
        initial_replicas=chosen.initial_replicas,
    )  # fmt: skip
    assert config.routing is RoutingMode.UNIFORM
    assert dict(config.initial_replicas) == {Role.INTERACTIVE: 0, Role.MIXED: 1, Role.BATCH: 0}
    assert dict(config.initial_max_num_seqs) == {Role.MIXED: 64}


def test_static_starts_with_its_whole_count() -> None:
    chosen = setup(load_scenario(TINY), PolicySpec("static", static_replicas=3))
    assert chosen.initial_replicas == {Role.MIXED: 3}


def test_overrides_change_defaults_but_keep_what_a_scenario_sets() -> None:
    scenario = load_scenario(TINY)
    overrides = [
        ("global.ibpHighRatio", 0.9),
        ("roles.batch.initialBatchSizeSeqs", 32),  # the scenario sets 128: kept
        ("roles.mixed.initialBatchSizeSeqs", 32),  # left to its default: changed
    ]
    tuned = with_overrides(scenario, overrides, defaults_only=True)
    assert tuned.tuning().global_scaling.ibp_high_ratio == 0.9
    assert tuned.bounds()[Role.BATCH].initial_batch_size_seqs == 128
    assert tuned.bounds()[Role.MIXED].initial_batch_size_seqs == 32
    forced = with_overrides(scenario, overrides)
    assert forced.bounds()[Role.BATCH].initial_batch_size_seqs == 32
    with pytest.raises(ValidationError):  # overrides are validated by the pool's rules
        with_overrides(scenario, [("global.ibpLowRatio", 0.95)])
