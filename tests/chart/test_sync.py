"""Copies that must not drift: the chart's CRD (from crds/), the rendered kustomize manifests
(from the chart), and the scrape jobs quoted in docs/INSTALL.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.support import (
    CHART,
    CUSTOM_KINDS,
    KUBE_VERSIONS,
    LOADER,
    MONITORING_KINDS,
    ROOT,
    custom_errors,
    load_module,
    run,
    tool,
)

KUSTOMIZE = ROOT / "deploy" / "kustomize"


def test_chart_crd_is_a_byte_copy_of_the_generated_crd() -> None:
    source = ROOT / "crds" / "chiron.io_llmservingpools.yaml"
    copy = CHART / "crds" / "chiron.io_llmservingpools.yaml"
    assert copy.read_bytes() == source.read_bytes(), "run charts/sync-crds.sh"


def test_sync_script_check_mode_agrees() -> None:
    result = run(["sh", str(ROOT / "charts" / "sync-crds.sh"), "--check"])
    assert result.returncode == 0, result.stderr


def test_kustomize_manifests_match_a_fresh_render() -> None:
    render = load_module(KUSTOMIZE / "render.py", "chiron_kustomize_render")
    wanted = render.generate()
    for path, text in wanted.items():
        committed = KUSTOMIZE / path
        assert committed.exists(), f"missing {path}: run deploy/kustomize/render.py"
        assert committed.read_text() == text, f"stale {path}: run deploy/kustomize/render.py"
    owned = {str(p.relative_to(KUSTOMIZE)) for p in render.generated_paths()}
    assert owned == set(wanted), "files no render produces: run deploy/kustomize/render.py"


def test_kustomize_base_carries_the_crds_byte_for_byte() -> None:
    for crd in (CHART / "crds").glob("*.yaml"):
        assert (KUSTOMIZE / "base" / "crds" / crd.name).read_bytes() == crd.read_bytes()


def kustomize_build(folder: Path) -> list[dict[str, Any]]:
    kubectl = tool("kubectl", "any recent kubectl (kustomize is built in)", required=False)
    result = run([kubectl, "kustomize", str(folder)])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.load_all(result.stdout, Loader=LOADER) if doc]


@pytest.mark.parametrize(
    "folder",
    ["base", "overlays/example"],
)
def test_kustomizations_build_and_validate(folder: str) -> None:
    built = kustomize_build(KUSTOMIZE / folder)
    kinds = {o["kind"] for o in built}
    assert {"Namespace", "CustomResourceDefinition", "Deployment", "ClusterRole"} <= kinds
    for obj in built:
        if obj["kind"] in CUSTOM_KINDS:
            assert custom_errors(obj) == [], obj["metadata"]
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_example_overlay_adds_monitoring_and_its_patches() -> None:
    built = kustomize_build(KUSTOMIZE / "overlays" / "example")
    monitors = [o for o in built if o["kind"] in MONITORING_KINDS]
    # Two PodMonitors: the vLLM pods' and the gateways'.
    assert sorted(o["kind"] for o in monitors) == sorted([*MONITORING_KINDS, "PodMonitor"])
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboards = [o for o in built if o["kind"] == "ConfigMap"]
    assert len(dashboards) == 2
    assert {d["metadata"]["namespace"] for d in dashboards} == {"monitoring"}


def test_base_has_no_helm_labels() -> None:
    for path in KUSTOMIZE.rglob("*.yaml"):
        text = path.read_text()
        assert "helm.sh/chart" not in text, path
        assert "managed-by: Helm" not in text, path


def test_install_guide_quotes_the_generated_scrape_jobs() -> None:
    jobs = (KUSTOMIZE / "plain-prometheus" / "scrape-configs.yaml").read_text()
    body = "".join(line + "\n" for line in jobs.splitlines() if not line.startswith("#"))
    assert body in (ROOT / "docs" / "INSTALL.md").read_text(), (
        "docs/INSTALL.md must quote deploy/kustomize/plain-prometheus/scrape-configs.yaml"
    )
