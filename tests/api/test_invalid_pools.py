"""One table of invalid pools, rejected by both enforcers: the models and the CRD.

Each case edits a valid spec and names the field at fault. The models must reject it with an
error at that path whose message names it; the API server (the CRD's schema, or its CEL rules
when the schema alone accepts it) must reject it naming the same field. Cases breaking a
cross-field rule also name the rule, and the CEL message must equal the Python one, so the two
forms of every rule are checked against each other; every rule has a case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from chiron_operator.api import LLMServingPoolSpec, validate_spec
from chiron_operator.api.rules import RULES
from chiron_operator.core.enums import Role
from tests.api.crd_support import apply_defaults, cel_failures, schema_errors
from tests.api.pools import edited, minimal_spec

QUEUE = {"queuedRequestsQuery": 'sum by (deadline) (queued{pool="p"})'}
POSTGRESQL = {"type": "PostgreSQL", "postgresql": {"urlSecretRef": {"name": "gateway-store"}}}


@dataclass(frozen=True)
class Case:
    """An edit that makes a valid spec invalid, the field blamed, and the rule broken."""

    id: str
    changes: dict[str, Any]
    path: str
    rule: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _role_cases() -> list[Case]:
    cases = []
    for role in Role:
        base = f"roles.{role.value}"
        spec_base = f"spec.{base}"
        cases += [
            Case(
                f"{role.value}-min-replicas-above-max",
                {f"{base}.minReplicas": 3, f"{base}.maxReplicas": 2},
                f"{spec_base}.minReplicas",
                f"{spec_base}.minReplicas <= {spec_base}.maxReplicas",
            ),
            Case(
                f"{role.value}-min-batch-above-initial",
                {f"{base}.minBatchSizeSeqs": 100, f"{base}.initialBatchSizeSeqs": 50},
                f"{spec_base}.minBatchSizeSeqs",
                f"{spec_base}.minBatchSizeSeqs <= {spec_base}.initialBatchSizeSeqs",
            ),
            Case(
                f"{role.value}-initial-batch-above-max",
                {f"{base}.initialBatchSizeSeqs": 2000},
                f"{spec_base}.initialBatchSizeSeqs",
                f"{spec_base}.initialBatchSizeSeqs <= {spec_base}.maxBatchSizeSeqs",
            ),
        ]
    return cases


def _flag_case(flag: str, args: list[str]) -> Case:
    return Case(
        f"args-{args[0]}",
        {"template.args": args},
        "spec.template.args",
        f"spec.template.args without {flag}",
    )


RULE_CASES = [
    *_role_cases(),
    Case(
        "interactive-disabled-by-max-only",
        {"roles.interactive.maxReplicas": 0},
        "spec.roles.interactive.minReplicas",
        "spec.roles.interactive.minReplicas <= spec.roles.interactive.maxReplicas",
    ),
    Case(
        "no-interactive-capacity",
        {"roles.interactive": {"minReplicas": 0, "maxReplicas": 0}, "roles.mixed.maxReplicas": 0},
        "spec.roles.interactive.maxReplicas",
        "interactive traffic servable",
    ),
    Case(
        "no-batch-capacity-with-queue",
        {"batchQueue": QUEUE, "roles.batch.maxReplicas": 0, "roles.mixed.maxReplicas": 0},
        "spec.roles.batch.maxReplicas",
        "batch traffic servable",
    ),
    _flag_case("--max-num-seqs", ["--max-num-seqs", "64"]),
    _flag_case("--max-num-seqs", ["--max_num_seqs=8"]),
    _flag_case("--scheduling-policy", ["--scheduling-policy=priority"]),
    _flag_case("--tensor-parallel-size", ["-tp", "2"]),
    _flag_case("--port", ["--port=9000"]),
    _flag_case("--host", ["--host", "127.0.0.1"]),
    _flag_case("--uds", ["--uds=/tmp/vllm.sock"]),
    _flag_case("--disable-log-stats", ["--disable-log-stats"]),
    _flag_case("--served-model-name", ["--served_model_name=chat"]),
    _flag_case("--model", ["--model", "other"]),
    _flag_case("--pipeline-parallel-size", ["-pp", "2"]),
    _flag_case("--data-parallel-size", ["--data-parallel-size=2"]),
    _flag_case("--shutdown-timeout", ["--shutdown-timeout", "30"]),
    Case(
        "gpus-differ-from-tensor-parallel",
        {"template.resources": {"limits": {"nvidia.com/gpu": 2}}},
        "spec.template.tensorParallelSize",
        "spec.template.tensorParallelSize == spec.template.resources.limits[nvidia.com/gpu]",
    ),
    Case(
        "sqlite-store-with-two-gateways",
        {"gateway.replicas": 2},
        "spec.gateway.replicas",
        "spec.gateway.replicas == 1 with SQLite",
    ),
    Case(
        "postgresql-store-without-its-secret",
        {"gateway.store.type": "PostgreSQL", "gateway.replicas": 3},
        "spec.gateway.store.postgresql.urlSecretRef",
        "spec.gateway.store.postgresql.urlSecretRef with PostgreSQL",
    ),
    Case(
        "postgresql-settings-on-the-sqlite-store",
        {"gateway.store.postgresql": POSTGRESQL["postgresql"]},
        "spec.gateway.store.postgresql",
        "spec.gateway.store.postgresql only with PostgreSQL",
    ),
    Case(
        "window-shorter-than-two-scrapes",
        {"prometheus.windowS": 20},
        "spec.prometheus.windowS",
        "spec.prometheus.windowS >= 2 * spec.prometheus.scrapeIntervalS",
    ),
    Case(
        "staleness-within-scrape-interval",
        {"tuning.guards.metricsStalenessS": 15},
        "spec.tuning.guards.metricsStalenessS",
        "spec.tuning.guards.metricsStalenessS > spec.prometheus.scrapeIntervalS",
    ),
    Case(
        "ibp-band-inverted",
        {"tuning.global.ibpLowRatio": 0.9},
        "spec.tuning.global.ibpLowRatio",
        "spec.tuning.global.ibpLowRatio < spec.tuning.global.ibpHighRatio",
    ),
    Case(
        "ibp-band-empty",
        {"tuning.global": {"ibpLowRatio": 0.7, "ibpHighRatio": 0.7}},
        "spec.tuning.global.ibpLowRatio",
        "spec.tuning.global.ibpLowRatio < spec.tuning.global.ibpHighRatio",
    ),
    Case(
        "urgent-dwell-longer-than-dwell",
        {"tuning.restart.urgentDwellS": 200.5},
        "spec.tuning.restart.urgentDwellS",
        "spec.tuning.restart.urgentDwellS <= spec.tuning.restart.dwellS",
    ),
]

SCHEMA_CASES = [
    Case("typo-in-role", {"roles.mixed.maxReplica": 3}, "spec.roles.mixed.maxReplica"),
    Case("typo-at-top", {"slos": {}}, "spec.slos"),
    Case("unknown-mode", {"mode": "Auto"}, "spec.mode"),
    Case("negative-replicas", {"roles.batch.minReplicas": -1}, "spec.roles.batch.minReplicas"),
    Case(
        "replicas-not-a-number", {"roles.mixed.maxReplicas": "two"}, "spec.roles.mixed.maxReplicas"
    ),
    Case("port-out-of-range", {"template.port": 70000}, "spec.template.port"),
    Case("image-missing", {"template": {"args": []}}, "spec.template.image"),
    Case("model-empty", {"model": ""}, "spec.model"),
    Case(
        "quantity-malformed",
        {"template.resources": {"limits": {"memory": "64 GB"}}},
        "spec.template.resources.limits.memory",
    ),
    Case("percentile-not-below-one", {"slo.percentileRatio": 1.0}, "spec.slo.percentileRatio"),
    Case("ttft-target-zero", {"slo.interactiveTtftS": 0}, "spec.slo.interactiveTtftS"),
    Case("url-without-scheme", {"prometheus.url": "prometheus:9090"}, "spec.prometheus.url"),
    Case(
        "ratio-above-one",
        {"tuning.local.saturationRatio": 1.5},
        "spec.tuning.local.saturationRatio",
    ),
    Case(
        "toleration-effect-unknown",
        {"template.tolerations": [{"key": "gpu", "effect": "Never"}]},
        "spec.template.tolerations[0].effect",
    ),
    Case("history-too-long", {"control.historyLimit": 1000}, "spec.control.historyLimit"),
    Case(
        "queue-query-empty",
        {"batchQueue": {"queuedRequestsQuery": ""}},
        "spec.batchQueue.queuedRequestsQuery",
    ),
    Case("too-many-args", {"template.args": ["--x"] * 257}, "spec.template.args"),
    Case("gateway-typo", {"gateway.enable": False}, "spec.gateway.enable"),
    Case("gateway-no-replicas", {"gateway.replicas": 0}, "spec.gateway.replicas"),
    Case("gateway-too-many-replicas", {"gateway.replicas": 17}, "spec.gateway.replicas"),
    Case("gateway-image-empty", {"gateway.image": ""}, "spec.gateway.image"),
    Case(
        "gateway-quantity-malformed",
        {"gateway.resources": {"requests": {"cpu": "a quarter"}}},
        "spec.gateway.resources.requests.cpu",
    ),
    Case(
        "gateway-negative-queue",
        {"gateway.maxQueuedRequests": -1},
        "spec.gateway.maxQueuedRequests",
    ),
    Case("gateway-queue-wait-zero", {"gateway.maxQueueWaitS": 0}, "spec.gateway.maxQueueWaitS"),
    Case("gateway-queue-wait-long", {"gateway.maxQueueWaitS": 601}, "spec.gateway.maxQueueWaitS"),
    Case(
        "gateway-negative-reserve",
        {"gateway.mixedReserveSlots": -1},
        "spec.gateway.mixedReserveSlots",
    ),
    Case(
        "gateway-negative-interactive-reserve",
        {"gateway.interactiveReserveSlots": -1},
        "spec.gateway.interactiveReserveSlots",
    ),
    Case(
        "gateway-lend-not-bool",
        {"gateway.batchOnInteractive": "maybe"},
        "spec.gateway.batchOnInteractive",
    ),
    Case(
        "gateway-preempt-not-bool", {"gateway.preemptBatch": "maybe"}, "spec.gateway.preemptBatch"
    ),
    Case("store-type-unknown", {"gateway.store.type": "sqlite"}, "spec.gateway.store.type"),
    Case("store-size-zero", {"gateway.store.sqlite.size": "0Gi"}, "spec.gateway.store.sqlite.size"),
    Case(
        "store-size-not-bytes",
        {"gateway.store.sqlite.size": "500m"},
        "spec.gateway.store.sqlite.size",
    ),
    Case(
        "store-class-empty",
        {"gateway.store.sqlite.storageClassName": ""},
        "spec.gateway.store.sqlite.storageClassName",
    ),
    Case(
        "store-secret-without-name",
        {"gateway.store": {"type": "PostgreSQL", "postgresql": {"urlSecretRef": {"key": "url"}}}},
        "spec.gateway.store.postgresql.urlSecretRef.name",
    ),
    Case(
        "store-secret-key-malformed",
        {"gateway.store": POSTGRESQL, "gateway.store.postgresql.urlSecretRef.key": "a url"},
        "spec.gateway.store.postgresql.urlSecretRef.key",
    ),
]

# Pools on the edge of a rule, which both enforcers must accept: a rule off by one in either
# form fails here rather than in a user's cluster.
VALID_EDGES = {
    "replicas-pinned": {"roles.mixed": {"minReplicas": 2, "maxReplicas": 2}},
    "batch-size-pinned": {
        "roles.batch": {"minBatchSizeSeqs": 64, "initialBatchSizeSeqs": 64, "maxBatchSizeSeqs": 64}
    },
    "interactive-served-by-mixed-only": {
        "roles.interactive": {"minReplicas": 0, "maxReplicas": 0},
        "roles.mixed.maxReplicas": 1,
    },
    "batch-served-by-mixed-only": {
        "batchQueue": QUEUE,
        "roles.batch.maxReplicas": 0,
        "roles.mixed.maxReplicas": 1,
    },
    "window-of-two-scrapes": {"prometheus": {"url": "https://prom:9090", "windowS": 30}},
    "staleness-just-above-scrape": {"tuning.guards.metricsStalenessS": 15.5},
    "urgent-dwell-equals-dwell": {"tuning.restart": {"dwellS": 60, "urgentDwellS": 60}},
    "gpus-match": {
        "template.tensorParallelSize": 4,
        "template.resources": {"limits": {"nvidia.com/gpu": "4"}},
    },
    "gateway-at-its-bounds": {
        "gateway": {
            "replicas": 16,
            "maxQueuedRequests": 0,
            "maxQueueWaitS": 600,
            "store": POSTGRESQL,
        },
    },
    "gateway-off": {"gateway.enabled": False},
    # A disabled gateway runs no pod: its replicas need not fit the SQLite store.
    "gateway-off-with-replicas-left": {"gateway": {"enabled": False, "replicas": 3}},
    "sqlite-store-one-replica": {
        "gateway.store": {"sqlite": {"size": "0.5Gi", "storageClassName": "fast-ssd"}}
    },
    "postgresql-store-one-replica": {"gateway.store": POSTGRESQL},
    "unowned-flags-alike": {
        "template.args": ["--max-num-batched-tokens=8192", "--max-model-len", "--portal", "-tpx"]
    },
}

CASES = RULE_CASES + SCHEMA_CASES
RULES_BY_CEL = {rule.rule: rule for rule in RULES}


def _invalid(case: Case) -> dict[str, Any]:
    return edited(minimal_spec(), case.changes)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_models_reject_naming_the_field(case: Case) -> None:
    spec = _invalid(case)
    errors = validate_spec(spec)
    at_path = [e for e in errors if e.path == case.path]
    assert at_path, f"no error at {case.path}: {errors}"
    assert all(case.path in e.message for e in at_path)
    with pytest.raises(ValidationError):
        LLMServingPoolSpec.model_validate(spec)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_crd_rejects_naming_the_field(case: Case, spec_schema: dict[str, Any]) -> None:
    spec = apply_defaults(_invalid(case), spec_schema)
    rejected = schema_errors(spec, spec_schema)
    if case.rule:
        assert rejected == [], "a rule case must pass the schema and fail only its rule"
        failures = cel_failures(spec, spec_schema)
        rejected = [(f.path, f.message) for f in failures]
        broken = {RULES_BY_CEL[f.rule].name for f in failures}
        assert case.rule in broken
    paths = [path for path, _ in rejected]
    assert case.path in paths, f"no rejection at {case.path}: {rejected}"
    if case.rule:
        assert all(case.path in message for path, message in rejected if path == case.path)


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.id)
def test_cel_and_python_say_the_same(case: Case, spec_schema: dict[str, Any]) -> None:
    spec = _invalid(case)
    cel = {f.message for f in cel_failures(apply_defaults(spec, spec_schema), spec_schema)}
    python = {e.message for e in validate_spec(spec) if e.path == case.path}
    assert python and python <= cel


def test_every_rule_has_a_case() -> None:
    assert {rule.name for rule in RULES} == {case.rule for case in RULE_CASES}


def test_rule_names_are_unique() -> None:
    assert len({rule.name for rule in RULES}) == len(RULES)


@pytest.mark.parametrize("changes", VALID_EDGES.values(), ids=list(VALID_EDGES))
def test_both_enforcers_accept_the_edges(changes: dict[str, Any], spec_schema: Any) -> None:
    spec = edited(minimal_spec(), changes)
    assert validate_spec(spec) == []
    defaulted = apply_defaults(spec, spec_schema)
    assert schema_errors(defaulted, spec_schema) == []
    assert cel_failures(defaulted, spec_schema) == []
