"""deploy/examples: each pool is accepted by the CRD (schema and CEL) and by the models, and
says what its name promises."""

from __future__ import annotations

from typing import Any

import pytest

from chiron_operator.api import LLMServingPool, Mode
from chiron_operator.core.enums import Role
from chiron_operator.core.tuning import GuardTuning, RestartTuning
from tests.api.crd_support import apply_defaults, cel_failures, schema_errors
from tests.api.pools import EXAMPLE_NAMES, EXAMPLES_DIR, load_example


def test_every_example_is_tested() -> None:
    assert sorted(p.stem for p in EXAMPLES_DIR.glob("*.yaml")) == sorted(EXAMPLE_NAMES)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_is_accepted_by_the_crd(name: str, openapi: dict[str, Any]) -> None:
    pool = load_example(name)
    assert schema_errors(pool, openapi, root="") == []
    defaulted = apply_defaults(pool, openapi)
    assert schema_errors(defaulted, openapi, root="") == []
    assert cel_failures(defaulted["spec"], openapi["properties"]["spec"]) == []


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_parses_and_converts(name: str, openapi: dict[str, Any]) -> None:
    pool = LLMServingPool.model_validate(load_example(name))
    tuning = pool.spec.to_tuning()
    assert set(tuning.bounds) == set(Role)
    # The server's defaulting and the models' defaults agree on the example.
    defaulted = LLMServingPool.model_validate(apply_defaults(load_example(name), openapi))
    assert defaulted == pool


def test_interactive_only_runs_interactive_instances_only() -> None:
    spec = LLMServingPool.model_validate(load_example("interactive-only")).spec
    assert spec.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert spec.mode is Mode.OBSERVE
    assert spec.roles.interactive.max_replicas >= 1
    assert spec.roles.mixed.max_replicas == spec.roles.batch.max_replicas == 0
    assert spec.batch_queue is None


def test_mixed_pool_runs_all_roles_with_an_hour_deadline() -> None:
    spec = LLMServingPool.model_validate(load_example("mixed-interactive-batch")).spec
    assert all(b.max_replicas >= 1 for b in spec.roles.bounds().values())
    assert spec.slo.batch_deadline_s == 3600.0
    # The batch backlog is the gateway's: no query to write.
    assert spec.gateway.enabled
    assert spec.batch_queue is None


def test_70b_pool_spans_four_gpus_and_waits_for_cold_starts() -> None:
    spec = LLMServingPool.model_validate(load_example("llama-70b-tp4")).spec
    assert spec.template.tensor_parallel_size == 4
    assert spec.template.resources.limits["nvidia.com/gpu"] == "4"
    guards, restart = spec.tuning.guards, spec.tuning.restart
    assert guards.scale_up_cooldown_s > GuardTuning().scale_up_cooldown_s
    assert guards.scale_down_stabilization_s > GuardTuning().scale_down_stabilization_s
    assert guards.metrics_staleness_s > GuardTuning().metrics_staleness_s
    assert restart.dwell_s > RestartTuning().dwell_s
    assert restart.min_interval_s > RestartTuning().min_interval_s
