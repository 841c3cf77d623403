"""The committed CRD, loaded once: tests check what ships, not a fresh rendering."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.api.pools import CRD_PATH


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


@pytest.fixture(scope="session")
def openapi(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(scope="session")
def spec_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = openapi["properties"]["spec"]
    return schema


@pytest.fixture(scope="session")
def status_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = openapi["properties"]["status"]
    return schema
