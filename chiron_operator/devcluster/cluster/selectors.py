"""Label and field selectors, as the API server evaluates them on LIST and WATCH.

Label selectors follow apimachinery's grammar: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
`k notin (a,b)`, `k`, `!k`, and the numeric `k>3`, `k<3`, joined by commas (a conjunction).
`!=` and `notin` match objects without the label, as in Kubernetes.

Field selectors accept any dotted path (`metadata.name`, `status.phase`,
`involvedObject.name`), where the real server accepts a fixed list per resource; a missing
field reads as the empty string, as it does there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

LabelMatcher = Callable[[Mapping[str, str]], bool]
ObjectMatcher = Callable[[Mapping[str, Any]], bool]

_KEY = r"(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)"
_SET = re.compile(rf"^{_KEY}\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_CMP = re.compile(rf"^{_KEY}\s*(?P<op>==|=|!=|<|>)\s*(?P<value>[-A-Za-z0-9_.]*)$")
_EXISTS = re.compile(rf"^(?P<neg>!?)\s*{_KEY}$")
_FIELD = re.compile(r"^(?P<path>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*)$")


class SelectorError(ValueError):
    """A selector the API server would reject (HTTP 400)."""


def _split(text: str) -> list[str]:
    """Top-level comma-separated parts; commas inside `in (...)` sets do not split."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [part for part in parts if part]


def parse_label_selector(text: str | None) -> LabelMatcher:
    """A predicate on a label map; None or "" matches everything."""
    requirements = [_requirement(part) for part in _split(text or "")]
    return lambda labels: all(requirement(labels) for requirement in requirements)


def _requirement(part: str) -> LabelMatcher:
    if found := _SET.match(part):
        key, values = found["key"], {v.strip() for v in found["values"].split(",")}
        if found["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if found := _CMP.match(part):
        return _comparison(found["key"], found["op"], found["value"])
    if found := _EXISTS.match(part):
        key, negated = found["key"], bool(found["neg"])
        return lambda labels: (key in labels) != negated
    raise SelectorError(f"unable to parse requirement: {part!r}")


def _comparison(key: str, op: str, value: str) -> LabelMatcher:
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    if not value.lstrip("-").isdigit():
        raise SelectorError(f"for '<' and '>', the value must be an integer: {value!r}")
    bound = int(value)

    def compare(labels: Mapping[str, str]) -> bool:
        found = labels.get(key, "")
        if not found.lstrip("-").isdigit():
            return False
        return int(found) > bound if op == ">" else int(found) < bound

    return compare


def parse_field_selector(text: str | None) -> ObjectMatcher:
    """A predicate on a whole object; None or "" matches everything."""
    requirements = []
    for part in _split(text or ""):
        found = _FIELD.match(part)
        if found is None:
            raise SelectorError(f"invalid field selector: {part!r}")
        requirements.append((found["path"].split("."), found["op"] == "!=", found["value"]))

    def matches(obj: Mapping[str, Any]) -> bool:
        return all((field_text(obj, path) == value) != neg for path, neg, value in requirements)

    return matches


def field_text(obj: Mapping[str, Any], path: list[str]) -> str:
    """A field's value as a field selector compares it: the string form, "" when missing."""
    current: Any = obj
    for name in path:
        if not isinstance(current, Mapping):
            return ""
        current = current.get(name)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    """An object's labels (empty when it has none)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, Mapping) else {}


def matches_selector_object(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether labels satisfy a structured LabelSelector (`matchLabels`, `matchExpressions`)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(_expression(expr, labels) for expr in selector.get("matchExpressions") or [])


def _expression(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
    checks: dict[Any, Callable[[], bool]] = {
        "In": lambda: labels.get(key) in values,
        "NotIn": lambda: labels.get(key) not in values,
        "Exists": lambda: key in labels,
        "DoesNotExist": lambda: key not in labels,
    }
    check = checks.get(operator)
    if check is None:
        raise SelectorError(f"unknown label selector operator: {operator!r}")
    return check()
