"""The chart renders for its defaults and every ci/ values file, lints clean, and every manifest
it renders is valid: built-in kinds against Kubernetes' schemas (1.30 and the newest, 1.37),
Prometheus Operator and kopf custom resources against their CRDs' schemas."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.chart.support import (
    CASES,
    CHART,
    CUSTOM_KINDS,
    DEFAULT,
    KUBE_VERSIONS,
    MONITORING_KINDS,
    NAMESPACE,
    case_values,
    crd_objects,
    crds,
    custom_errors,
    merged_values,
    objects,
    of_kind,
    one,
    parse,
    render,
    walk,
)

# Helm's only remark on the chart: it has no icon (there is no published logo to point at).
ACCEPTED_LINT_INFO = {"icon is recommended"}


def test_cases_cover_the_required_matrix() -> None:
    """The ci/ values files exercise each mode the chart supports."""
    merged = [merged_values(case) for case in CASES]
    monitoring = ("serviceMonitor", "podMonitor", "prometheusRule", "grafanaDashboards")
    assert any(v["rbac"]["scope"] == "cluster" and not v["watchNamespaces"] for v in merged)
    assert any(v["rbac"]["scope"] == "cluster" and v["watchNamespaces"] for v in merged)
    assert any(
        v["rbac"]["scope"] == "namespaces" and len(v["watchNamespaces"]) == 2 for v in merged
    )
    assert any(v["replicaCount"] == 2 for v in merged)
    assert any(v["prometheus"]["authSecret"]["name"] for v in merged)
    assert any(all(not v[key]["enabled"] for key in monitoring) for v in merged)
    assert any(v["grafanaDashboards"]["label"] != "grafana_dashboard" for v in merged)
    assert any(not v["peering"]["enabled"] for v in merged)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_lint_is_clean(case: str, kube_version: str) -> None:
    report = helm_python.lint(
        CHART, case_values(case), strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}"
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    assert {m["error"] for m in report["messages"]} <= ACCEPTED_LINT_INFO


@pytest.mark.parametrize("case", CASES)
def test_every_object_is_named_and_labelled(case: str) -> None:
    objs = objects(case)
    assert objs, "nothing rendered"
    seen = set()
    for obj in objs:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace"), meta["name"])
        assert key not in seen, f"rendered twice: {key}"
        seen.add(key)
        assert len(meta["name"]) <= 63
        assert meta["labels"]["app.kubernetes.io/part-of"] == "chiron"
        assert meta["labels"]["app.kubernetes.io/instance"] == "chiron-operator"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_builtin_kinds_validate_against_kubernetes(case: str, kube_version: str) -> None:
    builtin = [o for o in objects(case) if o["kind"] not in CUSTOM_KINDS]
    assert builtin
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {kube_version}: {exc}")


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_crds_validate_against_kubernetes(kube_version: str) -> None:
    found = crd_objects()
    assert {c["metadata"]["name"] for c in found} == {
        "llmservingpools.chiron.io",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }
    for crd in found:
        kubernetes_validate.validate(crd, kube_version, strict=True)


@pytest.mark.parametrize("case", CASES)
def test_custom_resources_validate_against_their_crds(case: str) -> None:
    for obj in objects(case):
        if obj["kind"] in CUSTOM_KINDS:
            assert custom_errors(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_custom_validation_rejects_unknown_and_unvendored_fields() -> None:
    """The strict schemas catch a misspelt field and a field whose schema was reduced."""
    monitor = one(objects(DEFAULT), "ServiceMonitor")
    typo = copy.deepcopy(monitor)
    typo["spec"]["endpoints"][0]["scrapeInterval"] = "30s"
    assert any("scrapeInterval" in e for e in custom_errors(typo))
    unvendored = copy.deepcopy(monitor)
    unvendored["spec"]["endpoints"][0]["tlsConfig"] = {"insecureSkipVerify": True}
    assert custom_errors(unvendored)
    for pods in of_kind(objects(DEFAULT), "PodMonitor"):
        pods["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = "rename"
        assert custom_errors(pods)
    rule = one(objects(DEFAULT), "PrometheusRule")
    rule["spec"]["groups"][1]["rules"][0]["for"] = "ten minutes"
    assert custom_errors(rule)


@pytest.mark.parametrize("case", CASES)
def test_objects_live_in_the_release_or_a_watched_namespace(case: str) -> None:
    values = case_values(case)
    allowed = {NAMESPACE, *values.get("watchNamespaces", [])}
    # The Roles that let the operator read pools' token Secrets, where they are listed.
    allowed |= set(values.get("prometheus", {}).get("poolAuthSecretNamespaces", []))
    allowed.add(values.get("grafanaDashboards", {}).get("namespace") or NAMESPACE)
    for obj in objects(case):
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] in allowed, obj["metadata"]


def test_monitoring_objects_follow_their_toggles() -> None:
    kinds = {o["kind"] for o in objects(DEFAULT)}
    assert set(MONITORING_KINDS) <= kinds
    assert len(of_kind(objects(DEFAULT), "ConfigMap")) == 2
    off = objects("monitoring-off-values")
    assert not {o["kind"] for o in off} & set(MONITORING_KINDS)
    assert of_kind(off, "ConfigMap") == []
    for key, kind in (
        ("serviceMonitor", "ServiceMonitor"),
        ("podMonitor", "PodMonitor"),
        ("prometheusRule", "PrometheusRule"),
    ):
        alone = {o["kind"] for o in _render_objects({key: {"enabled": False}})}
        assert kind not in alone
        assert set(MONITORING_KINDS) - {kind} <= alone


def _render_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    return parse(render(values))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"unknownKey": True}, "additional properties 'unknownKey' not allowed"),
        ({"rbac": {"scope": "namespaces"}}, "watchNamespaces"),
        ({"replicaCount": 2, "peering": {"enabled": False}}, "peering/enabled"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "does not match pattern"),
        ({"operator": {"logFormat": "xml"}}, "logFormat"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"prometheusRule": {"alerts": {"conflict": {"for": "5 minutes"}}}}, "for"),
        ({"serviceMonitor": {"enabled": True, "interval": "often"}}, "interval"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=message):
        render(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rbac": {"scope": "namespaces"}}, "rbac.scope=namespaces needs watchNamespaces"),
        ({"replicaCount": 3, "peering": {"enabled": False}}, "needs peering.enabled=true"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ],
)
def test_templates_refuse_bad_combinations_without_the_schema(
    values: dict[str, Any], message: str, tmp_path: Path
) -> None:
    """`helm install --skip-schema-validation` still fails, with a message naming the fix.

    Helm's lint mode downgrades `fail` to a log line, so the chart is rendered from a copy
    without its values.schema.json instead.
    """
    copy_dir = tmp_path / "chiron-operator"
    shutil.copytree(CHART, copy_dir)
    (copy_dir / "values.schema.json").unlink()
    chart = helm_python.Chart.load(copy_dir)
    try:
        with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
            chart.render(values, name="chiron-operator", namespace=NAMESPACE, is_install=True)
    finally:
        chart.close()


def documented_keys(text: str) -> dict[str, bool]:
    """Dotted path of every key in a values file -> whether a `# --` comment introduces it."""
    found: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    comment = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment = comment or stripped.startswith("# --")
            continue
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if match is None:
            comment = False
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        found[".".join(key for _, key in stack)] = comment
        comment = False
    return found


def test_values_are_documented_and_in_the_schema() -> None:
    """Every value, or a key above it, has a `# --` comment, and every key a schema entry."""
    text = (CHART / "values.yaml").read_text()
    documented = documented_keys(text)
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    for path, value in walk(yaml.safe_load(text)):
        if not path or (isinstance(value, dict) and value):
            continue
        # A list's items are documented by the list's own key.
        keys = re.sub(r"\[\d+\]", "", path).strip(".").split(".")
        assert any(documented[".".join(keys[:n])] for n in range(1, len(keys) + 1)), path
    for path in documented:
        node = schema
        for key in path.split("."):
            if "properties" not in node:
                break
            assert key in node["properties"], f"{path} is not in values.schema.json"
            node = node["properties"][key]


# Objects passed through to Kubernetes as they are, which the API server validates.
OPEN_SCHEMA_OBJECTS = {".properties.operator.properties.extraEnv.items"}


def test_schema_is_strict() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    for path, node in walk(schema):
        if isinstance(node, dict) and node.get("type") == "object" and "properties" in node:
            strict = path not in OPEN_SCHEMA_OBJECTS
            assert node.get("additionalProperties") is (not strict), path


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "chiron-operator"
    assert chart["appVersion"] == "0.1.0"
    assert [name for name, _ in crds()] == [
        "chiron.io_llmservingpools.yaml",
        "kopf.dev_peerings.yaml",
    ]
    assert Path(CHART / "templates" / "NOTES.txt").exists()


def test_readme_lists_every_value_with_its_default() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    readme = (CHART / "README.md").read_text()
    rows = {
        cells[0].strip("`"): cells[1].strip("`")
        for line in readme.splitlines()
        if line.startswith("| `")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    for path, documented in documented_keys(text).items():
        if not documented:
            continue
        node = values
        for key in path.split("."):
            node = node[key]
        assert path in rows, f"{path} missing from the chart README"
        assert json.loads(rows[path]) == node, path
