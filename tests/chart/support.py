"""Rendering the Helm chart offline (helm-python-sdk) and reading what it renders.

Every values case is the chart's defaults plus one file of charts/chiron-operator/ci/, rendered
once per test session (the cache) as release `chiron-operator` in namespace `chiron-system`.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "chiron-operator"
CI_DIR = CHART / "ci"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RELEASE = "chiron-operator"
NAMESPACE = "chiron-system"
DEFAULT = "default"
CASES = (DEFAULT, *sorted(p.name.removesuffix(".yaml") for p in CI_DIR.glob("*.yaml")))
KUBE_VERSIONS = ("1.30.0", "1.37.0")
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")

Obj = dict[str, Any]


def case_values(case: str) -> dict[str, Any]:
    """The values file of a case (empty for the defaults)."""
    if case == DEFAULT:
        return {}
    loaded: dict[str, Any] = yaml.safe_load((CI_DIR / f"{case}.yaml").read_text())
    return loaded


def merged_values(case: str) -> dict[str, Any]:
    """The chart's defaults with the case's values merged in, as Helm merges them."""
    return _merge(yaml.safe_load((CHART / "values.yaml").read_text()), case_values(case))


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def render(values: Mapping[str, Any]) -> dict[str, str]:
    """The chart's templates rendered with `values`: template path -> text."""
    chart = helm_python.Chart.load(CHART)
    try:
        return chart.render(dict(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    finally:
        chart.close()


@functools.cache
def rendered(case: str) -> dict[str, str]:
    """The rendered templates of a values case (cached)."""
    return render(case_values(case))


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse(texts: Mapping[str, str]) -> list[Obj]:
    """Every object of the rendered YAML templates, in template then document order."""
    found: list[Obj] = []
    for path in sorted(texts):
        if path.endswith(".yaml"):
            found += [doc for doc in yaml.load_all(texts[path], Loader=LOADER) if doc]
    return found


@functools.cache
def _objects(case: str) -> tuple[Obj, ...]:
    return tuple(parse(rendered(case)))


def objects(case: str) -> list[Obj]:
    """The objects a values case renders (a fresh list of fresh dicts: tests may change them)."""
    return copy.deepcopy(list(_objects(case)))


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str) -> Obj:
    (found,) = of_kind(objs, kind)
    return found


@functools.cache
def crds() -> tuple[tuple[str, str], ...]:
    """(file name, text) of the chart's CRD files, as Helm loads them."""
    chart = helm_python.Chart.load(CHART)
    try:
        return tuple(sorted((Path(c["name"]).name, c["data"]) for c in chart.crds))
    finally:
        chart.close()


def crd_objects() -> list[Obj]:
    return [doc for _, text in crds() for doc in yaml.safe_load_all(text) if doc]


def operator_deployment(case: str) -> Obj:
    return one(objects(case), "Deployment")


def operator_container(case: str) -> Obj:
    (container,) = operator_deployment(case)["spec"]["template"]["spec"]["containers"]
    found: Obj = container
    return found


def rule_groups(case: str) -> list[Obj]:
    """The PrometheusRule's groups (empty when the case renders none)."""
    rules = of_kind(objects(case), "PrometheusRule")
    return rules[0]["spec"]["groups"] if rules else []


def tool(name: str, install: str, *, required: bool = True) -> str:
    """The path of a command-line tool.

    A missing required tool fails the test (`make system-deps` installs Prometheus and
    promtool); a missing optional one (kubectl, which no registry here provides) skips it.
    """
    fallback = Path("/usr/bin") / name
    found = shutil.which(name) or (str(fallback) if fallback.exists() else None)
    if found is None:
        message = f"{name} not installed: {install}"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    return found


def promtool() -> str:
    return tool("promtool", "run `make system-deps` (Debian package prometheus)")


def prometheus() -> str:
    return tool("prometheus", "run `make system-deps` (Debian package prometheus)")


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; the result carries its output for assertion messages."""
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def load_module(path: Path, name: str) -> ModuleType:
    """Import a script that is not part of a package (e.g. deploy/kustomize/render.py)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, value) pair of a nested structure of dicts and lists."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")
GRAFANA_DURATIONS = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
}


def substitute_grafana_variables(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by values PromQL accepts."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return GRAFANA_DURATIONS.get(name, f"example_{name}")

    return GRAFANA_VARIABLE.sub(value, expr)


PEERING_KINDS = ("KopfPeering", "ClusterKopfPeering")
CUSTOM_KINDS = (*MONITORING_KINDS, *PEERING_KINDS)


def strict_schema(schema: Any) -> Any:
    """A CRD schema as kubectl's strict field validation applies it: unknown fields rejected.

    Objects with `properties` and no `additionalProperties` get `additionalProperties: false`
    (unless they preserve unknown fields); subtrees the vendored files reduced
    (`x-chiron-reduced`) become `false`, so setting one fails until its schema is vendored.
    """
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("x-chiron-reduced"):
        return False
    out = {k: strict_schema(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _vendored(kind_file: str) -> Any:
    text = (SCHEMAS / f"monitoring.coreos.com_{kind_file}.openapi.yaml").read_text()
    return yaml.safe_load(text)


@functools.cache
def custom_validators() -> dict[str, jsonschema.Draft7Validator]:
    """A validator per custom kind, from the vendored and the chart's own CRD schemas."""
    schemas: dict[str, Any] = {
        "ServiceMonitor": _vendored("servicemonitors"),
        "PodMonitor": _vendored("podmonitors"),
        "PrometheusRule": _vendored("prometheusrules"),
    }
    for crd in crd_objects():
        kind = crd["spec"]["names"]["kind"]
        if kind in PEERING_KINDS:
            (version,) = crd["spec"]["versions"]
            schemas[kind] = version["schema"]["openAPIV3Schema"]
    for schema in schemas.values():
        # The API server accepts these at the root of every object, whatever the CRD says.
        schema["properties"].setdefault("apiVersion", {"type": "string"})
        schema["properties"].setdefault("kind", {"type": "string"})
        schema["properties"].setdefault("metadata", {"type": "object"})
    return {kind: jsonschema.Draft7Validator(strict_schema(s)) for kind, s in schemas.items()}


def custom_errors(obj: dict[str, Any]) -> list[str]:
    validator = custom_validators()[obj["kind"]]
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]
