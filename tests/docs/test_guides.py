"""The user guides (docs/USER_GUIDE.md, TUNING.md, TROUBLESHOOTING.md) stay true to the code.

Each check derives its expectations from the code, never from a list kept here, so a new
tunable, Reason, condition or Event fails CI until the guides say what it means. The guides
follow a few conventions this module parses:

- TUNING.md: tables whose header starts `| field | default | bounds |`, one row per tunable;
  the field is the wire path under `spec` (`tuning.local.itlTargetRatio`), default and bounds
  are code spans. Bounds read `[0, 1]`, `(0, 1]`, `>= 1` or `> 0` (as the CRD states them).
- TROUBLESHOOTING.md: a table whose header starts `| reason | from | meaning |`, one row per
  `Reason` (other tables there may list a few reasons by symptom).
- USER_GUIDE.md: tables whose headers start `| condition | status | reason |` (one row per
  condition type and reason the operator writes), `| event reason |` (Events it posts),
  `| column |` (`kubectl get lsp` columns) and `| panel |` (Grafana panels).
- Any ```yaml block: a document with `kind: LLMServingPool` must be a valid pool, unless the
  line before the block is `<!-- invalid-pool -->`: then it must be rejected, and the next
  ```text block lists the messages, one per line, exactly as the operator reports them. A
  document with a top-level `spec` and no `kind` is a fragment: merged over
  deploy/examples/mixed-interactive-batch.yaml it must give a valid pool.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import pytest
import yaml

from chiron_operator.api import LLMServingPool, LLMServingPoolSpec, validate_spec
from chiron_operator.api.crd import PRINTER_COLUMNS, spec_schema
from chiron_operator.api.status import ConditionType
from chiron_operator.core import tuning as core_tuning
from chiron_operator.core.enums import Reason
from chiron_operator.kube.conflicts import ConflictReason
from tests.api.crd_support import apply_defaults, cel_failures, schema_errors

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PACKAGE = REPO / "chiron_operator"
GUIDE_NAMES = ("USER_GUIDE", "TUNING", "TROUBLESHOOTING")
GUIDES = {name: DOCS / f"{name}.md" for name in GUIDE_NAMES}
CRD_PATH = REPO / "crds" / "chiron.io_llmservingpools.yaml"
FRAGMENT_BASE = REPO / "deploy" / "examples" / "mixed-interactive-batch.yaml"
DASHBOARDS = REPO / "charts" / "chiron-operator" / "dashboards"
INVALID_MARKER = "<!-- invalid-pool -->"

Json = dict[str, Any]


# --- Markdown -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: its info string, text, first line number and the line before it."""

    lang: str
    text: str
    line: int
    before: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@cache
def read(name: str) -> str:
    # A missing guide reads as empty, so it fails `test_guides_exist` and every check below
    # rather than the collection of this module.
    path = GUIDES[name]
    return path.read_text(encoding="utf-8") if path.exists() else ""


@pytest.mark.parametrize("name", GUIDE_NAMES)
def test_guides_exist(name: str) -> None:
    assert read(name).strip(), f"docs/{name}.md is missing or empty"


def fenced_blocks(text: str) -> list[Block]:
    blocks = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r"^```(\S*)\s*$", lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        before = next((ln.strip() for ln in reversed(lines[:index]) if ln.strip()), "")
        body = "\n".join(lines[index + 1 : end])
        blocks.append(Block(opening.group(1), body, index + 1, before))
        index = end + 1
    return blocks


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line outside fenced blocks: tables and links live there."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def _cells(line: str) -> tuple[str, ...]:
    # `\|` is a literal bar inside a cell (GitHub's escape); split on the others only.
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return tuple(part.strip().replace("\\|", "|") for part in parts)


def tables(text: str) -> list[Table]:
    found: list[Table] = []
    current: list[str] = []
    for _, line in [*prose_lines(text), (0, "")]:
        if line.lstrip().startswith("|"):
            current.append(line)
            continue
        if len(current) >= 2 and re.fullmatch(r"[\s|:-]+", current[1]):
            header = tuple(c.lower() for c in _cells(current[0]))
            found.append(Table(header, tuple(_cells(row) for row in current[2:])))
        current = []
    return found


def tables_starting(text: str, *columns: str) -> list[Table]:
    return [t for t in tables(text) if t.header[: len(columns)] == columns]


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def first_code_spans(rows: tuple[tuple[str, ...], ...], column: int = 0) -> set[str]:
    return {span for row in rows if len(row) > column for span in code_spans(row[column])}


# --- (a) TUNING.md: every tunable, its default and its bounds -------------------------------


def _model_fields(cls: object) -> dict[str, Any]:
    fields: dict[str, Any] = getattr(cls, "__pydantic_fields__", None) or {}
    return fields


def _field_classes(annotation: object) -> list[type]:
    """The pydantic classes an annotation refers to (through Optional; not containers)."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return [c for arg in get_args(annotation) for c in _field_classes(arg)]
    if isinstance(annotation, type) and _model_fields(annotation):
        return [annotation]
    return []


def _tunable_paths(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Wire paths under `spec` of every leaf field declared by a core.tuning class.

    Found by walking the spec's models, so a field added to a tuning type, or a tuning type
    embedded in a new place of the spec, shows up here without editing this test.
    """
    paths = []
    for name, info in _model_fields(cls).items():
        path = (*prefix, info.alias or name)
        nested = _field_classes(info.annotation)
        if nested:
            for inner in nested:
                paths += _tunable_paths(inner, path)
        elif cls.__module__ == core_tuning.__name__:
            paths.append(path)
    return paths


def _schema_at(path: tuple[str, ...]) -> Json:
    node = spec_schema()
    for part in path:
        node = node["properties"][part]
    return node


def _number(value: float) -> str:
    return f"{value:g}"


def bounds_text(schema: Json) -> str:
    """The bounds of a schema node as TUNING.md writes them."""
    low, high = schema.get("minimum"), schema.get("maximum")
    low_open, high_open = schema.get("exclusiveMinimum", False), schema.get("exclusiveMaximum")
    if low is not None and high is not None:
        opening, closing = "(" if low_open else "[", ")" if high_open else "]"
        return f"{opening}{_number(low)}, {_number(high)}{closing}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_number(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {_number(high)}"
    return "none"


@cache
def tunables() -> dict[str, Json]:
    """Every tunable's wire path -> its CRD schema node (default, bounds)."""
    return {".".join(path): _schema_at(path) for path in _tunable_paths(LLMServingPoolSpec)}


def documented_tunables() -> dict[str, tuple[str, ...]]:
    rows: dict[str, tuple[str, ...]] = {}
    for table in tables_starting(read("TUNING"), "field", "default", "bounds"):
        for row in table.rows:
            spans = code_spans(row[0])
            assert len(spans) == 1, f"TUNING.md row without exactly one field: {row}"
            assert spans[0] not in rows, f"TUNING.md documents {spans[0]} twice"
            rows[spans[0]] = row
    return rows


def test_tunables_are_found() -> None:
    # The walk itself must work: the sections users tune all appear.
    prefixes = {path.split(".")[0] for path in tunables()}
    assert {"slo", "roles", "tuning"} <= prefixes
    assert "tuning.local.itlTargetRatio" in tunables()


def test_every_tunable_is_in_tuning_md() -> None:
    documented = documented_tunables()
    missing = sorted(set(tunables()) - set(documented))
    unknown = sorted(set(documented) - set(tunables()))
    assert not missing, f"TUNING.md lacks a row for: {missing}"
    assert not unknown, f"TUNING.md documents fields the spec does not have: {unknown}"


@pytest.mark.parametrize("path", sorted(tunables()))
def test_documented_default_and_bounds_match_the_code(path: str) -> None:
    row = documented_tunables().get(path)
    if row is None:
        pytest.fail(f"TUNING.md lacks a row for {path}")
    schema = tunables()[path]
    default_spans = code_spans(row[1])
    assert len(default_spans) == 1, f"{path}: default cell {row[1]!r} needs one code span"
    assert yaml.safe_load(default_spans[0]) == schema["default"], (
        f"{path}: TUNING.md says default {default_spans[0]}, the code says {schema['default']}"
    )
    assert code_spans(row[2]) == [bounds_text(schema)], (
        f"{path}: TUNING.md says bounds {row[2]!r}, the code says `{bounds_text(schema)}`"
    )


# --- (b) TROUBLESHOOTING.md: every Reason ---------------------------------------------------


def test_every_reason_is_in_the_troubleshooting_table() -> None:
    reason_tables = tables_starting(read("TROUBLESHOOTING"), "reason", "from", "meaning")
    assert reason_tables, "TROUBLESHOOTING.md has no `| reason | from | meaning |` table"
    documented = set().union(*(first_code_spans(t.rows) for t in reason_tables))
    expected = {reason.value for reason in Reason}
    assert not expected - documented, f"reasons missing: {sorted(expected - documented)}"
    assert not documented - expected, f"not a Reason: {sorted(documented - expected)}"


# --- (c) USER_GUIDE.md: conditions, Events, columns, panels ---------------------------------


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _module_constants(module: ast.Module) -> dict[str, str]:
    return {
        target.id: node.value.value
        for node in module.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _functions(module: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {
        node.name: node
        for node in ast.walk(module)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _enclosing(module: ast.Module, target: ast.AST) -> ast.AST | None:
    for node in ast.walk(module):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            child is target for child in ast.walk(node)
        ):
            return node
    return None


def _resolve(expr: ast.expr, module: ast.Module, scope: ast.AST | None) -> set[str]:
    """Every string an expression can evaluate to, following names and local helpers.

    Raises on a construct it cannot follow, so a new way of choosing a reason fails loudly
    instead of silently leaving a reason undocumented.
    """
    found: set[str] | None = None
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        found = {expr.value}
    elif isinstance(expr, ast.IfExp):
        found = _resolve(expr.body, module, scope) | _resolve(expr.orelse, module, scope)
    elif isinstance(expr, ast.Attribute):
        found = _resolve_attribute(expr)
    elif isinstance(expr, ast.Name):
        found = _resolve_name(expr, module, scope)
    elif isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        helper = _functions(module).get(expr.func.id)
        if helper is not None:
            returns = [n.value for n in ast.walk(helper) if isinstance(n, ast.Return) and n.value]
            found = set().union(*(_resolve(value, module, helper) for value in returns))
    if found is None:
        raise AssertionError(f"cannot resolve {ast.unparse(expr)!r}: teach tests/docs this form")
    return found


def _resolve_attribute(expr: ast.Attribute) -> set[str] | None:
    if isinstance(expr.value, ast.Name) and expr.value.id == "ConditionType":
        return {ConditionType[expr.attr].value}
    # The one enum-valued condition reason: a Conflict's (kube.conflicts.ConflictReason).
    inner = expr.value
    if expr.attr == "value" and isinstance(inner, ast.Attribute) and inner.attr == "reason":
        return {reason.value for reason in ConflictReason}
    return None


def _resolve_name(expr: ast.Name, module: ast.Module, scope: ast.AST | None) -> set[str] | None:
    constants = _module_constants(module)
    if expr.id in constants:
        return {constants[expr.id]}
    assigned = [
        node.value
        for node in ast.walk(scope or module)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == expr.id for t in node.targets)
    ]
    if not assigned:
        return None
    return set().union(*(_resolve(value, module, scope) for value in assigned))


@cache
def condition_reasons() -> frozenset[tuple[str, str]]:
    """(condition type, reason) of every `condition(...)` call the operator makes."""
    pairs: set[tuple[str, str]] = set()
    for _, module in _modules():
        for node in ast.walk(module):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "condition"
                and len(node.args) >= 3
            ):
                scope = _enclosing(module, node)
                kinds = _resolve(node.args[0], module, scope)
                reasons = _resolve(node.args[2], module, scope)
                pairs |= {(kind, reason) for kind in kinds for reason in reasons}
    return frozenset(pairs)


def _posts_event(call: ast.Call) -> bool:
    """`x.post_event(...)`, or `asyncio.to_thread(x.post_event, ...)` as the async code calls it."""
    callees = [call.func, *call.args[:1]]
    return any(getattr(callee, "attr", "") == "post_event" for callee in callees)


@cache
def event_reasons() -> tuple[frozenset[str], frozenset[str]]:
    """(literal reasons, non-literal reason expressions) of every Event the package posts.

    Events are posted through `post_event(reason=...)` or built as `(EventType.X, reason,
    message)` tuples that a loop then posts; a bare name passed to `post_event` is such a
    loop variable and is covered by the tuples.
    """
    literal: set[str] = set()
    dynamic: set[str] = set()

    def note(expr: ast.expr) -> None:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            literal.add(expr.value)
        elif not isinstance(expr, ast.Name):
            dynamic.add(ast.unparse(expr))

    for _, module in _modules():
        for node in ast.walk(module):
            if isinstance(node, ast.Call) and _posts_event(node):
                for keyword in node.keywords:
                    if keyword.arg == "reason":
                        note(keyword.value)
            if (
                isinstance(node, ast.Tuple)
                and len(node.elts) == 3
                and isinstance(node.elts[0], ast.Attribute)
                and isinstance(node.elts[0].value, ast.Name)
                and node.elts[0].value.id == "EventType"
            ):
                note(node.elts[1])
    return frozenset(literal), frozenset(dynamic)


def test_every_condition_type_has_a_documented_reason() -> None:
    types_found = {kind for kind, _ in condition_reasons()}
    assert types_found == {kind.value for kind in ConditionType}, (
        "a condition type is never written (or the scan missed it)"
    )


def test_every_condition_and_reason_is_in_the_user_guide() -> None:
    rows = [
        row
        for table in tables_starting(read("USER_GUIDE"), "condition", "status", "reason")
        for row in table.rows
    ]
    documented = {
        (kind, reason)
        for row in rows
        for kind in code_spans(row[0])
        for reason in code_spans(row[2])
    }
    expected = set(condition_reasons())
    assert not expected - documented, f"undocumented: {sorted(expected - documented)}"
    assert not documented - expected, f"the operator never writes: {sorted(documented - expected)}"


def test_every_event_reason_is_in_the_user_guide() -> None:
    literal, dynamic = event_reasons()
    assert "InvalidSpec" in literal, "the Event scan found nothing: fix the scan"
    event_tables = tables_starting(read("USER_GUIDE"), "event reason")
    documented = set().union(*(first_code_spans(t.rows) for t in event_tables))
    assert not literal - documented, f"Event reasons missing: {sorted(literal - documented)}"
    # Enforce-mode Events carry the decision's Reason: those are the Reason enum, documented
    # in TROUBLESHOOTING.md's table, which the guide must point to.
    assert all(expr.endswith(".reason.value") for expr in dynamic), sorted(dynamic)
    if dynamic:
        assert "TROUBLESHOOTING.md#every-reason" in read("USER_GUIDE")


def test_every_printer_column_is_in_the_user_guide() -> None:
    columns = tables_starting(read("USER_GUIDE"), "column")
    documented = set().union(*(first_code_spans(t.rows) for t in columns))
    expected = {str(column["name"]) for column in PRINTER_COLUMNS}
    assert not expected - documented, f"columns missing: {sorted(expected - documented)}"


def _panel_titles(panels: list[Json]) -> Iterator[str]:
    for panel in panels:
        if panel.get("type") != "row":
            yield str(panel["title"])
        yield from _panel_titles(panel.get("panels", []))


@pytest.mark.parametrize("dashboard", sorted(p.name for p in DASHBOARDS.glob("*.json")))
def test_every_dashboard_panel_is_in_the_user_guide(dashboard: str) -> None:
    loaded = json.loads((DASHBOARDS / dashboard).read_text(encoding="utf-8"))
    panels = tables_starting(read("USER_GUIDE"), "panel")
    documented = {row[0].strip("* ") for table in panels for row in table.rows}
    missing = sorted(set(_panel_titles(loaded["panels"])) - documented)
    assert not missing, f"{dashboard}: panels missing from USER_GUIDE.md: {missing}"


# --- (d) YAML examples ----------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    guide: str
    line: int
    pool: Json
    invalid_messages: tuple[str, ...] | None  # None: must be valid


def _merge(base: Json, fragment: Json) -> Json:
    out = copy.deepcopy(base)
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def examples() -> list[Example]:
    found = []
    base = yaml.safe_load(FRAGMENT_BASE.read_text(encoding="utf-8"))
    for name in GUIDE_NAMES:
        blocks = fenced_blocks(read(name))
        for index, block in enumerate(blocks):
            if block.lang != "yaml":
                continue
            for doc in yaml.safe_load_all(block.text):
                if not isinstance(doc, dict):
                    continue
                if doc.get("kind") == "LLMServingPool":
                    pool = doc
                elif "spec" in doc and "kind" not in doc:
                    pool = _merge(base, doc)
                else:
                    continue
                messages = None
                if block.before == INVALID_MARKER:
                    following = blocks[index + 1] if index + 1 < len(blocks) else None
                    assert following is not None and following.lang == "text", (
                        f"{name}.md:{block.line}: an invalid pool needs a ```text block after it"
                    )
                    messages = tuple(ln for ln in following.text.splitlines() if ln.strip())
                found.append(Example(name, block.line, pool, messages))
    return found


def test_the_guides_have_examples() -> None:
    found = examples()
    assert any(e.guide == "USER_GUIDE" and e.invalid_messages is None for e in found)
    assert any(e.invalid_messages is not None for e in found)
    assert any(e.guide == "TUNING" for e in found)


@cache
def _openapi() -> Json:
    crd = yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))
    schema: Json = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _crd_rejections(pool: Json) -> list[str]:
    """What the API server would say, through the committed CRD's schema and CEL rules."""
    openapi = _openapi()
    found = [f"{path}: {message}" for path, message in schema_errors(pool, openapi, root="")]
    if not found:
        defaulted = apply_defaults(pool, openapi)
        found = [f.message for f in cel_failures(defaulted["spec"], openapi["properties"]["spec"])]
    return found


@pytest.mark.parametrize("example", examples(), ids=lambda e: f"{e.guide}.md:{e.line}")
def test_yaml_example(example: Example) -> None:
    errors = [e.message for e in validate_spec(example.pool.get("spec") or {})]
    if example.invalid_messages is None:
        assert errors == [], f"{example.guide}.md:{example.line}: {errors}"
        LLMServingPool.model_validate(example.pool)
        assert _crd_rejections(example.pool) == []
        return
    assert errors, f"{example.guide}.md:{example.line} is marked invalid but validates"
    assert sorted(errors) == sorted(example.invalid_messages), (
        f"{example.guide}.md:{example.line}: the operator says {errors}"
    )
    assert _crd_rejections(example.pool), "the API server would accept it"


# --- (e) Links ------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        heading = re.match(r"^#{1,6}\s+(.*)$", line)
        if heading is None:
            continue
        slug = _slug(heading.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


@pytest.mark.parametrize("name", GUIDE_NAMES)
def test_relative_links_resolve(name: str) -> None:
    broken = []
    for number, line in prose_lines(read(name)):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            file_part, _, anchor = target.partition("#")
            path = (GUIDES[name].parent / file_part).resolve() if file_part else GUIDES[name]
            if not path.exists():
                broken.append(f"{name}.md:{number}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{name}.md:{number}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    ("source", "prefix"), [(REPO / "README.md", "docs/"), (DOCS / "INSTALL.md", "")]
)
def test_readme_and_install_link_the_guides(source: Path, prefix: str) -> None:
    text = source.read_text(encoding="utf-8")
    for name in GUIDE_NAMES:
        assert f"]({prefix}{name}.md" in text, f"{source.name} does not link {name}.md"
