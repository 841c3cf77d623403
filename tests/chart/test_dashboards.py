"""The Grafana dashboards: valid JSON of Grafana's dashboard model, templated by namespace and
pool, laid out on the 24-column grid, and shipped in ConfigMaps the Grafana sidecar finds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.support import CASES, CHART, NAMESPACE, merged_values, objects, of_kind

DASHBOARD_DIR = CHART / "dashboards"
FILES = sorted(DASHBOARD_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = list(board["panels"])
    while stack:
        panel = stack.pop(0)
        stack += panel.get("panels", [])
        yield panel


def test_the_two_dashboards_exist() -> None:
    assert [p.name for p in FILES] == ["chiron-operator.json", "chiron-pool.json"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_dashboard_model(path: Path) -> None:
    board = load(path)
    assert board["uid"] == path.stem
    assert board["title"].startswith("Chiron / ")
    assert board["schemaVersion"] >= 36
    assert board["id"] is None  # provisioned dashboards must not carry a database id
    assert "chiron" in board["tags"]
    names = [v["name"] for v in board["templating"]["list"]]
    assert names[:3] == ["datasource", "namespace", "pool"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        assert panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["description"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_layout_fits_the_grid_without_overlap(path: Path) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels(load(path)):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_pool_dashboard_queries_select_one_pool() -> None:
    board = load(DASHBOARD_DIR / "chiron-pool.json")
    for panel in panels(board):
        for target in panel.get("targets", []):
            assert 'namespace="$namespace"' in target["expr"], panel["title"]
            assert 'pool="$pool"' in target["expr"], panel["title"]


def test_operator_dashboard_queries_follow_the_selection() -> None:
    board = load(DASHBOARD_DIR / "chiron-operator.json")
    for panel in panels(board):
        for target in panel.get("targets", []):
            assert 'namespace=~"$namespace"' in target["expr"], panel["title"]
            assert 'pool=~"$pool"' in target["expr"], panel["title"]


def test_rates_use_grafanas_rate_interval() -> None:
    for path in FILES:
        for panel in panels(load(path)):
            for target in panel.get("targets", []):
                expr = target["expr"]
                if "rate(" in expr or "increase(" in expr:
                    assert "[$__rate_interval]" in expr, (path.name, panel["title"])


@pytest.mark.parametrize("case", CASES)
def test_configmaps_carry_the_files_and_the_sidecar_label(case: str) -> None:
    values = merged_values(case)["grafanaDashboards"]
    maps = [
        m
        for m in of_kind(objects(case), "ConfigMap")
        if m["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboards"
    ]
    if not values["enabled"]:
        assert maps == []
        return
    assert len(maps) == len(FILES)
    shipped = {}
    for config_map in maps:
        meta = config_map["metadata"]
        assert meta["labels"][values["label"]] == values["labelValue"]
        assert meta["namespace"] == (values["namespace"] or NAMESPACE)
        assert meta.get("annotations", {}) == values["annotations"]
        ((key, text),) = config_map["data"].items()
        shipped[key] = text
    for path in FILES:
        assert json.loads(shipped[path.name]) == load(path)
        assert shipped[path.name] == path.read_text().rstrip("\n")


def test_gateway_queries_count_each_gateway_replica_once() -> None:
    """A gateway replica scraped by two jobs counts once: `max by (pod, ...)` before summing over
    the replicas, as the operator's own gateway queries do."""
    board = load(DASHBOARD_DIR / "chiron-pool.json")
    found = 0
    for panel in panels(board):
        for target in panel.get("targets", []):
            expr = target["expr"]
            if "chiron_gateway_" in expr:
                found += 1
                selections = expr.count("chiron_gateway_")
                assert expr.count("max by (pod") == selections, panel["title"]
    assert found >= 5
