"""docs/ARCHITECTURE.md stays a true map of the package, and the code keeps its shape.

The map's expectations come from the tree and from pyproject.toml, never from a list kept here:
a new package, a renamed module or a new import contract fails CI until the map says so.
"""

from __future__ import annotations

import ast
import re
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "chiron_operator"
MAP = ROOT / "docs" / "ARCHITECTURE.md"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Functions that are declarative tables (one registration after another), where length is the
# table's, not logic's. Each entry says what the table is.
DECLARATIVE_TABLES = {
    "chiron_operator/operator/telemetry.py::OperatorMetrics.__post_init__": "metric families",
    "chiron_operator/gateway/metrics.py::GatewayMetrics.__init__": "metric families",
}


@cache
def map_text() -> str:
    return MAP.read_text()


def packages() -> set[str]:
    """Every package below the top one, as `chiron_operator/a/b`."""
    return {
        str(init.parent.relative_to(ROOT))
        for init in PACKAGE.rglob("__init__.py")
        if init.parent != PACKAGE
    }


def named_packages() -> set[str]:
    """The packages the map names: a code span ending in `/` under chiron_operator."""
    return {m.rstrip("/") for m in re.findall(r"`(chiron_operator/[\w/]+/)`", map_text())}


def test_every_package_is_on_the_map() -> None:
    assert packages() - named_packages() == set()


def test_every_package_on_the_map_exists() -> None:
    # Besides packages, the map names data folders (scenarios, vendored tables): no code there.
    others = named_packages() - packages()
    assert [p for p in sorted(others) if not (ROOT / p).is_dir()] == []
    assert [p for p in sorted(others) if any((ROOT / p).glob("*.py"))] == []


def test_every_path_on_the_map_exists() -> None:
    spans = re.findall(r"`((?:chiron_operator|charts|deploy|docs|tests)/[\w./-]*)`", map_text())
    missing = [span for span in spans if not (ROOT / span).exists()]
    assert spans and missing == []


def test_every_import_contract_is_on_the_map() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = [c["name"] for c in config["tool"]["importlinter"]["contracts"]]
    text = " ".join(map_text().split())
    assert len(names) >= 7
    assert [name for name in names if f"**{name}**" not in text] == []


def test_the_readme_layout_links_the_map() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    assert "(docs/ARCHITECTURE.md)" in layout and "(docs/TESTING.md)" in layout


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                name = f"{path.relative_to(ROOT)}::{prefix}{child.name}"
                if length > MAX_FUNCTION_LINES and name not in DECLARATIVE_TABLES:
                    found.append(f"{name} ({length} lines)")
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def test_functions_stay_short() -> None:
    assert [f for path in _modules() for f in _long_functions(path)] == []


def test_the_declarative_exceptions_still_exist() -> None:
    for name in DECLARATIVE_TABLES:
        file, qualified = name.split("::")
        tree = ast.parse((ROOT / file).read_text())
        defined = {
            f"{cls.name}.{fn.name}"
            for cls in ast.walk(tree)
            if isinstance(cls, ast.ClassDef)
            for fn in cls.body
            if isinstance(fn, ast.FunctionDef)
        }
        assert qualified in defined
