"""The spec models: defaults, conversion to the core tuning, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from chiron_operator.api import (
    API_VERSION,
    KIND,
    OPERATOR_OWNED_FLAGS,
    InvalidSpecError,
    LLMServingPool,
    LLMServingPoolSpec,
    Mode,
    RolesSpec,
    SpecError,
    SQLiteStore,
    StoreSecretKeyRef,
    StoreSpec,
    StoreType,
    parse_spec,
    validate_spec,
)
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
from chiron_operator.gateway import cli as gateway_cli
from chiron_operator.gateway.config import parse_duration_s
from chiron_operator.routing import RoutingTuning
from tests.api.crd_support import apply_defaults
from tests.api.pools import edited, minimal_spec

PARTIAL_SECTIONS = {
    "slo": {},
    "roles": {"interactive": {}, "mixed": {"maxReplicas": 3}, "batch": {"maxReplicas": 2}},
    "control": {},
    "tuning": {"local": {}, "restart": {}, "global": {}, "guards": {}},
    "template": {"image": "vllm/vllm-openai:v0.11.0", "resources": {}},
    "prometheus": {"url": "http://prometheus:9090", "authSecretRef": {"name": "prom"}},
    "batchQueue": {"queuedRequestsQuery": "sum by (deadline) (queued)"},
    # Resources given in part keep the gateway's other default (requests), both ways; so does
    # a store given in part (the Secret's key).
    "gateway": {
        "replicas": 2,
        "resources": {"limits": {"memory": "1Gi"}},
        "store": {"type": "PostgreSQL", "postgresql": {"urlSecretRef": {"name": "gw-store"}}},
    },
}


def _wire(section: object) -> dict[str, Any]:
    """A core tuning section as a user writes it in the spec (camelCase)."""
    dumped: dict[str, Any] = TypeAdapter(type(section)).dump_python(
        section, mode="json", by_alias=True
    )
    return dumped


def test_minimal_spec_runs_the_core_defaults() -> None:
    spec = LLMServingPoolSpec.model_validate(minimal_spec())
    assert spec.mode is Mode.OBSERVE
    # The gateway is on by default, and with it the local controller's fast path.
    assert spec.to_tuning() == PoolTuning(fast_path=True)
    no_gateway = LLMServingPoolSpec.model_validate(
        {**minimal_spec(), "gateway": {"enabled": False}}
    )
    assert no_gateway.to_tuning() == PoolTuning()
    assert (spec.template.port, spec.template.tensor_parallel_size) == (8000, 1)
    assert (spec.prometheus.window_s, spec.prometheus.scrape_interval_s) == (60.0, 15.0)
    assert spec.prometheus.pod_label == "pod"
    assert (spec.control.interval_s, spec.control.local_interval_s) == (15.0, 15.0)
    assert spec.control.history_limit == 20
    assert validate_spec(minimal_spec()) == []


def test_to_tuning_round_trips_every_section() -> None:
    tuning = PoolTuning(
        slo=SloTargets(interactive_ttft_s=0.8, interactive_itl_s=0.04, percentile_ratio=0.99),
        bounds={
            Role.INTERACTIVE: RoleBounds(min_replicas=2, max_replicas=5, max_batch_size_seqs=64),
            Role.MIXED: RoleBounds(min_replicas=1, max_replicas=3, initial_batch_size_seqs=16),
            Role.BATCH: RoleBounds(max_replicas=9, max_batch_size_seqs=2048),
        },
        local=LocalTuning(increase_max_ratio=1.0, saturation_ratio=0.8),
        restart=RestartTuning(dwell_s=60.0, urgent_dwell_s=10.0, max_restarts_per_hour=2),
        global_scaling=GlobalTuning(ibp_low_ratio=0.3, ibp_high_ratio=0.7, waiting_time_z=3.0),
        guards=GuardTuning(max_scale_up_step_replicas=2, metrics_staleness_s=45.0),
        fast_path=True,  # the gateway, on by default
    )
    raw = minimal_spec() | {
        "slo": _wire(tuning.slo),
        "roles": {role.value: _wire(bounds) for role, bounds in tuning.bounds.items()},
        "tuning": {
            "local": _wire(tuning.local),
            "restart": _wire(tuning.restart),
            "global": _wire(tuning.global_scaling),
            "guards": _wire(tuning.guards),
        },
    }
    assert LLMServingPoolSpec.model_validate(raw).to_tuning() == tuning


@pytest.mark.parametrize("raw", [minimal_spec(), minimal_spec() | PARTIAL_SECTIONS])
def test_server_defaulting_matches_the_models(raw: dict[str, Any], spec_schema: Any) -> None:
    models = LLMServingPoolSpec.model_validate(raw).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert apply_defaults(raw, spec_schema) == models


def test_gateway_defaults_are_the_gateways_own() -> None:
    """spec.gateway's defaults equal chiron-gateway's (the api package cannot import them)."""
    gateway = parse_spec(minimal_spec()).gateway
    routing = RoutingTuning()
    assert gateway.enabled and gateway.preempt_batch is routing.preempt_batch
    assert gateway.max_queued_requests == routing.max_queued_interactive
    assert gateway.max_queue_wait_s == routing.max_queue_wait_s
    assert gateway.mixed_reserve_slots == routing.mixed_reserve_slots
    assert gateway.batch_on_interactive is routing.batch_on_interactive
    assert gateway.interactive_reserve_slots == routing.interactive_reserve_slots
    assert (gateway.replicas, gateway.image) == (1, None)
    cli = gateway_cli.parser().parse_args(["--pool", "p", "--namespace", "n"])
    assert (cli.max_queued, cli.mixed_reserve_slots) == (256, 0)
    assert (cli.no_batch_on_interactive, cli.interactive_reserve_slots) == (False, 8)
    assert parse_duration_s(cli.max_queue_wait) == gateway.max_queue_wait_s


def test_the_gateway_store_defaults_to_sqlite_on_a_one_gibibyte_claim() -> None:
    store = parse_spec(minimal_spec()).gateway.store
    assert store == StoreSpec(type=StoreType.SQLITE, sqlite=SQLiteStore(size="1Gi"))
    assert (store.sqlite.storage_class_name, store.postgresql) == (None, None)
    raw = {"type": "PostgreSQL", "postgresql": {"urlSecretRef": {"name": "gw-store"}}}
    postgresql = parse_spec(edited(minimal_spec(), {"gateway.store": raw})).gateway.store
    assert postgresql.postgresql is not None
    assert postgresql.postgresql.url_secret_ref == StoreSecretKeyRef(name="gw-store", key="url")


def test_gateway_resources_default_per_field() -> None:
    spec = parse_spec(edited(minimal_spec(), {"gateway.resources": {"limits": {"cpu": 1}}}))
    assert spec.gateway.resources.requests == {"cpu": "250m", "memory": "256Mi"}
    assert spec.gateway.resources.limits == {"cpu": "1"}
    assert parse_spec(minimal_spec()).gateway.resources.limits == {"memory": "512Mi"}


def test_a_partial_role_keeps_its_role_defaults() -> None:
    spec = LLMServingPoolSpec.model_validate(edited(minimal_spec(), {"roles.batch.maxReplicas": 2}))
    assert spec.roles.batch == RoleBounds(
        min_replicas=0, max_replicas=2, max_batch_size_seqs=1024, initial_batch_size_seqs=256
    )
    assert spec.roles.interactive.min_replicas == 1


def test_roles_accept_python_names_and_objects() -> None:
    by_name = RolesSpec.model_validate({"batch": {"max_replicas": 2, "minReplicas": 1}})
    assert (by_name.batch.max_replicas, by_name.batch.min_replicas) == (2, 1)
    built = RolesSpec(mixed=RoleBounds(max_replicas=1))
    assert built.mixed.initial_batch_size_seqs == RoleBounds().initial_batch_size_seqs


def test_gpu_count_may_be_an_int_like_in_pod_specs() -> None:
    raw = edited(
        minimal_spec(),
        {"template.resources": {"limits": {"nvidia.com/gpu": 4}}, "template.tensorParallelSize": 4},
    )
    assert LLMServingPoolSpec.model_validate(raw).template.resources.limits == {
        "nvidia.com/gpu": "4"
    }


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        (
            {"template.env": [{"name": "A"}, {"value": "x"}]},
            SpecError("spec.template.env[1].name", "spec.template.env[1].name: Field required"),
        ),
        (
            {"template.resources": {"limits": {"nvidia.com/gpu": "four"}}},
            SpecError(
                "spec.template.resources.limits[nvidia.com/gpu]",
                "spec.template.resources.limits[nvidia.com/gpu]: String should match pattern "
                "'^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?"
                "(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$'",
            ),
        ),
        (
            {"template.nodeSelector": {7: "a"}},
            SpecError(
                "spec.template.nodeSelector[7]",
                "spec.template.nodeSelector[7]: key Input should be a valid string",
            ),
        ),
        (
            {"tuning.globl": {}},
            SpecError("spec.tuning.globl", "spec.tuning.globl: unknown field"),
        ),
    ],
)
def test_error_paths_are_kubernetes_field_paths(changes: dict[str, Any], error: SpecError) -> None:
    assert validate_spec(edited(minimal_spec(), changes)) == [error]


def test_a_spec_that_is_not_an_object() -> None:
    (error,) = validate_spec(None)
    assert error.path == "spec"
    assert error.message.startswith("spec: ")


def test_every_section_reports_its_violations() -> None:
    raw = edited(
        minimal_spec(),
        {
            "mode": "enforce",
            "roles.mixed": {"minReplicas": 4, "maxReplicas": 1},
            "template.args": ["--max-num-seqs=8", "--port", "80"],
        },
    )
    assert [e.path for e in validate_spec(raw)] == [
        "spec.mode",
        "spec.template.args",
        "spec.template.args",
        "spec.roles.mixed.minReplicas",
    ]


def test_parse_spec_raises_with_every_error() -> None:
    raw = edited(minimal_spec(), {"tuning.global.ibpLowRatio": 0.95, "prometheus.windowS": 5})
    with pytest.raises(InvalidSpecError) as raised:
        parse_spec(raw)
    assert [e.path for e in raised.value.errors] == [
        "spec.prometheus.windowS",
        "spec.tuning.global.ibpLowRatio",
    ]
    assert str(raised.value) == "; ".join(e.message for e in raised.value.errors)
    assert isinstance(parse_spec(minimal_spec()), LLMServingPoolSpec)


def test_spec_is_a_frozen_value() -> None:
    spec = parse_spec(minimal_spec())
    with pytest.raises(ValidationError):
        spec.model = "other"  # type: ignore[misc]


def test_the_whole_object_carries_group_version_kind() -> None:
    pool = LLMServingPool(spec=parse_spec(minimal_spec()))
    assert (pool.api_version, pool.kind) == (API_VERSION, KIND)
    assert pool.model_dump(by_alias=True, exclude_none=True)["apiVersion"] == "chiron.io/v1alpha1"
    with pytest.raises(ValidationError):
        LLMServingPool.model_validate({"apiVersion": "chiron.io/v1", "spec": minimal_spec()})


@pytest.mark.parametrize(
    ("arg", "owned"),
    [
        ("--max-num-seqs", "--max-num-seqs"),
        ("--max-num-seqs=32", "--max-num-seqs"),
        ("--max_num_seqs", "--max-num-seqs"),
        ("--scheduling_policy=fcfs", "--scheduling-policy"),
        ("-tp=8", "--tensor-parallel-size"),
        ("--port", "--port"),
        ("--max-num-batched-tokens=8192", None),
        ("--portal", None),
        ("-tpx", None),
        ("--max-model-len", None),
    ],
)
def test_owned_flags_match_every_spelling_and_nothing_else(arg: str, owned: str | None) -> None:
    matched = [flag.flag for flag in OPERATOR_OWNED_FLAGS if flag.matches(arg)]
    assert matched == ([owned] if owned else [])
