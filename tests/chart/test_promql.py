"""PromQL of the chart: the rules parse and pass their unit tests (promtool), every dashboard
query parses, and every metric name used exists (the operator's telemetry, the gateway's, vLLM's
names, or a recording rule of the chart)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from chiron_operator.gateway.metrics import GatewayMetrics
from chiron_operator.operator.telemetry import METRIC_NAMES, OperatorMetrics
from chiron_operator.routing import PoolRouter, RoutingTuning
from tests.chart.support import (
    CASES,
    CHART,
    DEFAULT,
    ROOT,
    parse,
    promtool,
    render,
    rule_groups,
    run,
    substitute_grafana_variables,
)

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
RULES_TEST = Path(__file__).resolve().parent / "rules_test.yaml"

VLLM_GAUGES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
)
VLLM_COUNTERS = (
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
    "vllm:num_preemptions_total",
)
VLLM_HISTOGRAMS = (
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:time_per_output_token_seconds",
    "vllm:request_generation_tokens",
)
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")
# Series Prometheus itself writes for every scrape target.
PROMETHEUS_SERIES = ("up",)


def _families() -> dict[str, str]:
    """Name -> type of every metric family the operator's registry exports."""
    registry = CollectorRegistry()
    OperatorMetrics(registry=registry)
    return {family.name: family.type for family in registry.collect()}


def operator_series() -> set[str]:
    """The operator's METRIC_NAMES, with the `_bucket/_count/_sum` series of its histograms."""
    histograms = {name for name, kind in _families().items() if kind == "histogram"}
    names = set(METRIC_NAMES)
    return names | {n + s for n in METRIC_NAMES if n in histograms for s in HISTOGRAM_SERIES}


def gateway_series() -> set[str]:
    """Every series the gateway exports (its router's gauges included), histograms expanded."""
    metrics = GatewayMetrics(registry=CollectorRegistry())
    router = PoolRouter(RoutingTuning())
    metrics.watch(lambda: router)
    names = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in HISTOGRAM_SERIES}
        else:
            names.add(family.name)
    return names


def test_gateway_series_include_the_batch_signals() -> None:
    assert {
        "chiron_gateway_batch_queued_requests",
        "chiron_gateway_batch_queued_tokens",
        "chiron_gateway_batch_output_tokens_count",
        "chiron_gateway_batch_output_tokens_sum",
        "chiron_gateway_batch_output_tokens_squares_total",
        "chiron_gateway_requests_total",
        "chiron_gateway_batch_preemptions_total",
    } <= gateway_series()


def vllm_series() -> set[str]:
    names = set(VLLM_GAUGES) | set(VLLM_COUNTERS)
    return names | {h + s for h in VLLM_HISTOGRAMS for s in HISTOGRAM_SERIES}


def recorded(groups: Iterable[dict[str, Any]]) -> set[str]:
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "atan2",
    # Aggregation operators, which `by (...)` or `without (...)` may separate from their `(`.
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords or labels)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGE.sub("[]", text)
    text = _LABEL_LIST.sub(r"\1", text)
    return {
        m.group(1)
        for m in _IDENTIFIER.finditer(text)
        if m.group(2) is None and m.group(1).lower() not in KEYWORDS
    }


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, pool) (rate(a:b_bucket{pool="x", le=~"1e3"}[1m])))'
        " / on (pool) group_left (role) c_total offset 5m > bool 1e-3"
        ' or label_replace(max by (pool) (deriv(d[10m])) > 0, "role", "batch", "", "")'
        " unless absent(up == 1)"
    )
    assert metric_names(expr) == {"a:b_bucket", "c_total", "d", "up"}


def test_telemetry_contract_is_what_the_registry_exports() -> None:
    """METRIC_NAMES (the names the chart may use) are series the operator really exports."""
    exported = set()
    for name, kind in _families().items():
        exported.add(name + "_total" if kind == "counter" else name)
    assert set(METRIC_NAMES) <= exported


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default values' rule groups as a Prometheus rule file, next to the unit tests."""
    folder = tmp_path_factory.mktemp("rules")
    (folder / "chiron.rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(DEFAULT)}))
    shutil.copy(RULES_TEST, folder / RULES_TEST.name)
    return folder / "chiron.rules.yaml"


@pytest.mark.parametrize("case", [c for c in CASES if rule_groups(c)])
def test_rules_pass_promtool_check(case: str, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(case)}))
    result = run([promtool(), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_unit_tests(rule_file: Path) -> None:
    """tests/chart/rules_test.yaml: every alert fires when it should and only then."""
    result = run([promtool(), "test", "rules", RULES_TEST.name], cwd=rule_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    tested = {t["alertname"] for group in tests for t in group.get("alert_rule_test", [])}
    alerts = {r["alert"] for g in rule_groups(DEFAULT) for r in g["rules"] if "alert" in r}
    records = recorded(rule_groups(DEFAULT))
    expressions = {t["expr"] for group in tests for t in group.get("promql_expr_test", [])}
    assert alerts == tested
    assert records <= expressions
    # Each alert is also tested silent at some evaluation time.
    silent = {
        t["alertname"]
        for group in tests
        for t in group.get("alert_rule_test", [])
        if not t.get("exp_alerts")
    }
    assert silent == alerts


@pytest.mark.parametrize("case", [c for c in CASES if rule_groups(c)])
def test_rules_use_only_known_metrics(case: str) -> None:
    groups = rule_groups(case)
    known = (
        operator_series()
        | gateway_series()
        | vllm_series()
        | recorded(groups)
        | set(PROMETHEUS_SERIES)
    )
    for group in groups:
        for rule in group["rules"]:
            assert metric_names(rule["expr"]), rule
            unknown = metric_names(rule["expr"]) - known
            assert not unknown, f"{rule.get('record') or rule.get('alert')}: {unknown}"


def test_rule_names_follow_conventions() -> None:
    for group in rule_groups(DEFAULT):
        for rule in group["rules"]:
            if "record" in rule:
                assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]), rule
            else:
                assert re.fullmatch(r"Chiron[A-Z][A-Za-z]+", rule["alert"]), rule
                assert rule["labels"]["severity"] in ("critical", "warning", "info")
                assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


def test_alert_settings_come_from_values() -> None:
    rules = {
        r["alert"]: r for g in rule_groups("everything-values") for r in g["rules"] if "alert" in r
    }
    assert "ChironConflict" not in rules
    assert rules["ChironSLOSlackNegative"]["for"] == "3m"
    assert rules["ChironSLOSlackNegative"]["labels"] == {
        "severity": "critical",
        "team": "inference",
    }
    assert "> 60" in rules["ChironMetricsStale"]["expr"]
    assert "[5m]" in rules["ChironPoolAtMaxReplicasQueueRising"]["expr"]
    records = [r for g in rule_groups("everything-values") for r in g["rules"] if "record" in r]
    assert all("[1m]" not in r["expr"] for r in records)
    assert any("[2m]" in r["expr"] for r in records)


def test_batch_alert_settings_come_from_values() -> None:
    objs = parse(
        render(
            {
                "prometheusRule": {
                    "alerts": {
                        "batchRequestsFailing": {
                            "maxFailedRatio": 0.25,
                            "window": "30m",
                            "for": "20m",
                            "severity": "critical",
                        },
                        "batchQueueStalled": {"window": "1h", "for": "30m"},
                    }
                }
            }
        )
    )
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    failing = alerts["ChironBatchRequestsFailing"]
    assert failing["expr"].endswith("> 0.25")
    assert failing["expr"].count("[30m]") == 2
    assert (failing["for"], failing["labels"]["severity"]) == ("20m", "critical")
    stalled = alerts["ChironBatchQueueStalled"]
    assert "[1h]" in stalled["expr"]
    assert stalled["for"] == "30m"
    objs = parse(
        render(
            {
                "prometheusRule": {
                    "alerts": {
                        "batchRequestsFailing": {"enabled": False},
                        "batchQueueStalled": {"enabled": False},
                    }
                }
            }
        )
    )
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    names = {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
    assert not names & {"ChironBatchRequestsFailing", "ChironBatchQueueStalled"}
    assert "ChironSLOSlackNegative" in names


def test_batch_alerts_select_the_gateways_of_pools() -> None:
    """The gateway's series carry the scrape's `pool` (the PodMonitor's relabelling): the batch
    alerts group by it, and count a gateway replica scraped by two jobs once (by `pod`)."""
    alerts = {r["alert"]: r for g in rule_groups(DEFAULT) for r in g["rules"] if "alert" in r}
    for name in ("ChironBatchRequestsFailing", "ChironBatchQueueStalled"):
        expr = alerts[name]["expr"]
        assert 'pool!=""' in expr, name
        assert "max by (namespace, pool, pod" in expr, name
        assert 'class="batch"' in expr, name


def test_operator_down_alert_needs_the_service_monitor() -> None:
    objs = parse(render({"serviceMonitor": {"enabled": False}}))
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    alerts = {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "ChironOperatorDown" not in alerts
    assert "ChironSLOSlackNegative" in alerts


def dashboard_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expression) of every query of a dashboard, rows' panels included."""
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop(0)
        panels += panel.get("panels", [])
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(variable, selector) of every `label_values(selector, label)` template variable."""
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, query
            yield variable["name"], match.group(1)


def dashboard_expressions() -> list[tuple[str, str]]:
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        found += [(f"{path.stem}: {t}", e) for t, e in dashboard_targets(board)]
        found += [(f"{path.stem}: ${v}", e) for v, e in variable_queries(board)]
    return found


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each query, its Grafana variables substituted, as a recording rule promtool accepts."""
    expressions = dashboard_expressions()
    assert len(expressions) > 30
    rules = [
        {"record": f"chiron_dashboard:query_{i}:check", "expr": substitute_grafana_variables(e)}
        for i, (_, e) in enumerate(expressions)
    ]
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run([promtool(), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_dashboard_queries_use_only_known_metrics() -> None:
    known = operator_series() | gateway_series() | vllm_series() | recorded(rule_groups(DEFAULT))
    for where, expr in dashboard_expressions():
        assert metric_names(substitute_grafana_variables(expr)), where
        unknown = metric_names(substitute_grafana_variables(expr)) - known
        assert not unknown, f"{where}: {unknown}"


def test_dashboards_cover_the_signals_the_brief_asks_for() -> None:
    pool = " ".join(e for w, e in dashboard_expressions() if w.startswith("chiron-pool"))
    operator = " ".join(e for w, e in dashboard_expressions() if w.startswith("chiron-operator"))
    for name in (
        "namespace_pool_role:vllm_time_to_first_token_seconds_count:rate",
        "namespace_pool_role:vllm_num_requests_running:sum",
        "namespace_pool_role:vllm_num_requests_waiting:sum",
        "chiron_desired_replicas",
        "chiron_applied_replicas",
        "chiron_ready_replicas",
        "chiron_batch_size_seqs",
        "namespace_pool_role:vllm_time_to_first_token_seconds:p95",
        "namespace_pool_role:vllm_inter_token_latency_seconds:p95",
        "chiron_slo_slack_ratio",
        "chiron_batch_queued_requests",
        "chiron_batch_worst_slack_seconds",
        "chiron_decisions_total",
        "chiron_restarts_total",
        # Is the batch work on track: the gateway's queue, outcomes, lengths and cut-offs.
        "chiron_gateway_batch_queued_requests",
        "chiron_gateway_batch_queued_tokens",
        "chiron_gateway_requests_total",
        "chiron_gateway_batch_output_tokens_sum",
        "chiron_gateway_batch_output_tokens_count",
        "chiron_gateway_batch_output_tokens_squares_total",
        "chiron_gateway_batch_preemptions_total",
    ):
        assert name in pool, name
    for name in (
        "chiron_reconcile_duration_seconds_bucket",
        "chiron_prometheus_queries_per_tick",
        "chiron_metrics_age_seconds",
    ):
        assert name in operator, name


def test_observability_guide_documents_every_alert_metric_and_rule() -> None:
    guide = (ROOT / "docs" / "OBSERVABILITY.md").read_text()
    headings = set(re.findall(r"^### (\w+)$", guide, flags=re.MULTILINE))
    for group in rule_groups(DEFAULT):
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] in headings, rule["alert"]
                anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
                assert anchor == rule["alert"].lower()
                assert rule["annotations"]["runbook_url"].endswith(
                    f"docs/OBSERVABILITY.md#{anchor}"
                )
            else:
                assert f"`{rule['record']}`" in guide, rule["record"]
    for name in METRIC_NAMES:
        assert f"`{name}`" in guide, name
