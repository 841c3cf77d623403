"""deploy/kind: the demo's manifests are valid Kubernetes objects, its pool is accepted by the CRD
(schema and CEL rules) and by the pool model, and the pieces agree with each other and with the
chart. The script itself needs Docker and kind, so only its syntax is checked here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from chiron_operator.api import LLMServingPool, Mode
from tests.api.crd_support import apply_defaults, cel_failures, schema_errors
from tests.chart.support import (
    CHART,
    KUBE_VERSIONS,
    LOADER,
    ROOT,
    operator_container,
    parse,
    render,
    run,
)

KIND = ROOT / "deploy" / "kind"
IMAGE = "ghcr.io/chiron-operator/chiron-operator:dev"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all((KIND / name).read_text(), Loader=LOADER) if d]


def pool() -> dict[str, Any]:
    (found,) = [d for d in docs("pool.yaml") if d["kind"] == "LLMServingPool"]
    return found


@pytest.mark.parametrize("name", ["monitoring.yaml", "loadgen.yaml", "pool.yaml"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_manifests_validate(name: str, kube_version: str) -> None:
    for obj in docs(name):
        if obj["kind"] != "LLMServingPool":
            kubernetes_validate.validate(obj, kube_version, strict=True)


def test_pool_is_accepted_by_the_crd_and_the_model() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "chiron.io_llmservingpools.yaml").read_text())
    openapi = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    manifest = pool()
    assert schema_errors(manifest, openapi, root="") == []
    defaulted = apply_defaults(manifest, openapi)
    assert cel_failures(defaulted["spec"], openapi["properties"]["spec"]) == []
    model = LLMServingPool.model_validate(manifest)
    assert model.spec.mode is Mode.ENFORCE
    assert model.spec.template.image == IMAGE
    # The emulator's latency profile and cold start, as vLLM-style flags it accepts.
    assert "--latency-profile" in model.spec.template.args


def test_pool_reads_the_demo_prometheus() -> None:
    monitoring = docs("monitoring.yaml")
    (service,) = [
        d for d in monitoring if d["kind"] == "Service" and d["metadata"]["name"] == "prometheus"
    ]
    url = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert pool()["spec"]["prometheus"]["url"] == f"{url}:{service['spec']['ports'][0]['port']}"


def test_chart_values_render_and_serve_the_pool_namespace() -> None:
    values = yaml.safe_load((KIND / "values-kind.yaml").read_text())
    objs = parse(render(values))
    assert pool()["metadata"]["namespace"] in values["watchNamespaces"]
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert not {o["kind"] for o in objs} & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert operator_container("default")["image"] != IMAGE  # the demo tag is the demo's own


def test_loadgen_targets_the_pools_interactive_service() -> None:
    (job,) = docs("loadgen.yaml")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    spec = pool()["spec"]
    assert env["MODEL"] == spec["model"]
    name, namespace = pool()["metadata"]["name"], pool()["metadata"]["namespace"]
    assert env["TARGET"].startswith(f"http://{name}-interactive.{namespace}.svc:8000/")
    assert container["image"] == IMAGE
    compile(container["args"][0], "loadgen", "exec")


def test_kind_cluster_config() -> None:
    config = yaml.safe_load((KIND / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    assert {n["role"] for n in config["nodes"]} == {"control-plane", "worker"}


def test_install_script_parses_and_uses_existing_files() -> None:
    script = KIND / "install.sh"
    result = run(["bash", "-n", str(script)])
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    for path in (
        "deploy/kustomize/plain-prometheus/scrape-configs.yaml",
        "deploy/kustomize/plain-prometheus/chiron.rules.yaml",
        "charts/chiron-operator/dashboards/",
        "charts/chiron-operator/crds/",
    ):
        assert path in text
        assert (ROOT / path).exists(), path
    for name in (
        "kind-config.yaml",
        "monitoring.yaml",
        "values-kind.yaml",
        "pool.yaml",
        "loadgen.yaml",
    ):
        assert f'"$here/{name}"' in text, name


def test_grafana_home_dashboard_is_shipped() -> None:
    (grafana,) = [
        d
        for d in docs("monitoring.yaml")
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "grafana"
    ]
    (container,) = grafana["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (CHART / "dashboards" / home.name).exists()


def test_dockerfile_builds_the_image_the_chart_expects() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM ${PYTHON_IMAGE}" in text and "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert '".[operator]"' in text
    assert "USER 65532:65532" in text
    assert 'ENTRYPOINT ["python", "-m", "chiron_operator"]' in text
    assert "chiron-emulator" in text
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("!pyproject.toml", "!README.md", "!chiron_operator/"):
        assert needed in ignore
