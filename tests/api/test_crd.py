"""The committed CRD: generated from the models, valid for Kubernetes, structural, readable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from chiron_operator.api.bounds import spec_structural
from chiron_operator.api.crd import main, render_crd
from chiron_operator.api.names import POOL_NAME_RULE
from chiron_operator.api.rules import RULES
from chiron_operator.api.spec import LLMServingPoolSpec
from tests.api.crd_support import as_jsonschema, cel_failures, compile_cel, walk
from tests.api.pools import CRD_PATH

FORBIDDEN_KEYS = {"$ref", "$defs", "definitions", "title", "const", "allOf", "oneOf", "not"}


def test_committed_crd_matches_the_models() -> None:
    assert main(["--check", str(CRD_PATH)]) == 0, "run: make crd"


def test_check_fails_on_drift_and_out_writes_the_rendering(tmp_path: Path) -> None:
    stale = tmp_path / "stale.yaml"
    stale.write_text(render_crd().replace("minimum: 1", "minimum: 2", 1))
    assert main(["--check", str(stale)]) == 1
    assert main(["--check", str(tmp_path / "missing.yaml")]) == 1
    fresh = tmp_path / "crds" / "pool.yaml"
    assert main(["--out", str(fresh)]) == 0
    assert fresh.read_text() == render_crd()


@pytest.mark.parametrize("version", ["1.30.0", latest_version()])
def test_crd_validates_against_kubernetes_strictly(crd: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(crd, version, strict=True)


def test_names_scope_and_subresources(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "llmservingpools.chiron.io"
    assert spec["group"] == "chiron.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "LLMServingPool",
        "listKind": "LLMServingPoolList",
        "plural": "llmservingpools",
        "singular": "llmservingpool",
        "shortNames": ["lsp"],
        "categories": ["chiron"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    # Three replica counts do not fit a scale subresource's one (see api/spec.py).
    assert version["subresources"] == {"status": {}}


def test_schema_is_structural(openapi: dict[str, Any]) -> None:
    for path, node in walk(openapi):
        assert not FORBIDDEN_KEYS & set(node), path
        typed = "type" in node or node.get("x-kubernetes-int-or-string")
        assert typed or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert not isinstance(node.get("additionalProperties"), bool), path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool), path


def test_only_the_controller_state_is_opaque(openapi: dict[str, Any]) -> None:
    opaque = [p for p, n in walk(openapi) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert opaque == [".status.controllerState"]


def test_defaults_are_valid_and_pruned(openapi: dict[str, Any]) -> None:
    defaulted = [(p, n) for p, n in walk(openapi) if "default" in n]
    assert len(defaulted) > 50
    for path, node in defaulted:
        errors = list(jsonschema.Draft4Validator(as_jsonschema(node)).iter_errors(node["default"]))
        assert errors == [], path
    assert not [p for p, _ in defaulted if p.startswith(".status")]


def test_defaults_pass_the_rules_at_their_node(openapi: dict[str, Any]) -> None:
    # The server checks a node's default against the node's CEL rules when the CRD is created.
    checked = [p for p, n in walk(openapi) if "default" in n and "x-kubernetes-validations" in n]
    assert checked == [".spec.roles", ".spec.gateway", ".spec.tuning"]
    for path, node in walk(openapi):
        if path in checked:
            assert cel_failures(node["default"], node, path) == []


def _resolve_field_path(node: dict[str, Any], field_path: str) -> dict[str, Any]:
    for name in field_path.lstrip(".").split("."):
        node = node["properties"][name]
    return node


def test_cel_rules_compile_and_point_at_fields(openapi: dict[str, Any]) -> None:
    found = []
    # The root's one rule is the pool's name (CEL sees only metadata.name there).
    assert openapi["x-kubernetes-validations"] == [POOL_NAME_RULE]
    compile_cel(POOL_NAME_RULE["rule"])
    for path, node in walk(openapi):
        if not path:
            continue
        for rule in node.get("x-kubernetes-validations", []):
            found.append(rule["rule"])
            assert _resolve_field_path(node, rule["fieldPath"]), (path, rule)
            assert rule["message"].startswith("spec."), rule
            assert rule["reason"] in {
                "FieldValueInvalid",
                "FieldValueForbidden",
                "FieldValueRequired",
            }
            for expression in (rule["rule"], rule.get("messageExpression")):
                if expression:
                    compile_cel(expression)
    # The cross-field rules, and those a model declares next to its fields (the batch queue's).
    declared = [
        rule["rule"]
        for _, node in walk(spec_structural(LLMServingPoolSpec))
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert sorted(found) == sorted([rule.rule for rule in RULES] + declared)


def test_lists_and_strings_the_rules_read_are_bounded(spec_schema: dict[str, Any]) -> None:
    # The API server rejects a CRD whose rules' estimated cost is unbounded.
    args = spec_schema["properties"]["template"]["properties"]["args"]
    assert args["maxItems"] <= 256
    assert args["items"]["maxLength"] <= 4096


def test_printer_columns_tell_the_story(crd: dict[str, Any], openapi: dict[str, Any]) -> None:
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    names = [c["name"] for c in columns if c.get("priority", 0) == 0]
    wide = [c["name"] for c in columns if c.get("priority", 0) == 1]
    assert names == ["Mode", "Ready", "Replicas", "Batch (I/M/B)", "SLO Slack", "Reason", "Age"]
    assert wide == ["Model", "Metrics Age", "Endpoint"]
    for column in columns:
        path = column["jsonPath"].split("[")[0]
        if not path.startswith(".metadata"):
            assert _resolve_field_path(openapi, path), column
