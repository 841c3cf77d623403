"""What the API server does with a pool, done here: defaulting, schema validation, CEL rules.

kubernetes-validate checks the CRD object but skips custom resources, so pools are checked
against the CRD's openAPIV3Schema with jsonschema (with unknown fields rejected, as kubectl's
default strict field validation does) and the x-kubernetes-validations rules are evaluated with
cel-python, `self` bound at each rule's node and typed by the schema as the server types it.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
import jsonschema
from celpy import celtypes

from chiron_operator.api.base import wire_path

Schema = dict[str, Any]


def apply_defaults(value: Any, schema: Schema) -> Any:
    """The server's defaulting: nulls of non-nullable fields pruned, missing fields defaulted
    from their schema (recursively, into the defaults themselves)."""
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in value]
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    out = {
        key: item
        for key, item in value.items()
        if item is not None or properties.get(key, {}).get("nullable")
    }
    for key, sub in properties.items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
    for key, item in out.items():
        if key in properties:
            out[key] = apply_defaults(item, properties[key])
        elif isinstance(extra, dict):
            out[key] = apply_defaults(item, extra)
    return out


def as_jsonschema(schema: Schema) -> Schema:
    """An OpenAPI v3.0 structural schema as draft-4 JSON Schema, unknown fields rejected."""
    out: Schema = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: as_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = as_jsonschema(value)
        elif key == "anyOf":
            out[key] = [as_jsonschema(sub) for sub in value]
        elif not key.startswith("x-kubernetes-") and key != "nullable":
            out[key] = value
    if schema.get("nullable"):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    # metadata is `type: object` alone: the server validates it as ObjectMeta, not here.
    open_object = "properties" not in schema or schema.get("x-kubernetes-preserve-unknown-fields")
    if schema.get("type") == "object" and not open_object:
        out["additionalProperties"] = False
    return out


_VALIDATORS: dict[int, tuple[Schema, jsonschema.Draft4Validator]] = {}


def _validator(schema: Schema) -> jsonschema.Draft4Validator:
    """One validator per schema object (building one is most of a small pool's check)."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, jsonschema.Draft4Validator(as_jsonschema(schema)))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def schema_errors(value: Any, schema: Schema, root: str = "spec") -> list[tuple[str, str]]:
    """(field path, message) of every schema violation, the path naming the field at fault."""
    validator = _validator(schema)
    found = []
    for error in validator.iter_errors(value):
        parts = list(error.absolute_path)
        if error.validator == "required":
            parts += [name for name in error.validator_value if name not in error.instance][:1]
        elif error.validator == "additionalProperties":
            known = error.schema.get("properties", {})
            parts += [name for name in error.instance if name not in known][:1]
        found.append((wire_path((root, *parts) if root else parts), error.message))
    return found


def to_cel(value: Any, schema: Schema) -> Any:
    """A JSON value as the server hands it to CEL: typed by the schema, nulls absent."""
    if schema.get("x-kubernetes-int-or-string"):
        return celtypes.IntType(value) if isinstance(value, int) else celtypes.StringType(value)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        items = {}
        for key, item in value.items():
            sub = properties.get(key) if properties is not None else extra
            if item is not None and isinstance(sub, dict):
                items[celtypes.StringType(key)] = to_cel(item, sub)
        return celtypes.MapType(items)
    if kind == "array":
        return celtypes.ListType([to_cel(item, schema["items"]) for item in value])
    scalar = {
        "integer": celtypes.IntType,
        "number": lambda v: celtypes.DoubleType(float(v)),
        "string": celtypes.StringType,
        "boolean": celtypes.BoolType,
    }
    return scalar[str(kind)](value)


@cache
def compile_cel(expression: str) -> Any:
    """A compiled CEL program (cached: the same rules run for every case); bad syntax raises."""
    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


def evaluate(expression: str, self_value: Any) -> Any:
    """Evaluate one CEL expression with `self` bound; evaluation errors raise."""
    result = compile_cel(expression).evaluate({"self": self_value})
    if isinstance(result, celpy.CELEvalError):
        raise result
    return result


@dataclass(frozen=True)
class CelFailure:
    """A rule that evaluated to false: where (node path + fieldPath), which, and its message."""

    path: str
    rule: str
    message: str


def _failure(rule: dict[str, str], self_value: Any, path: str) -> CelFailure:
    message = rule.get("message") or f"failed rule: {rule['rule']}"
    if "messageExpression" in rule:
        message = str(evaluate(rule["messageExpression"], self_value))
    field = rule.get("fieldPath", "").lstrip(".")
    full = f"{path}.{field}" if field else path
    return CelFailure(full, rule["rule"], message)


_RULE_VERDICTS: dict[tuple[str, str, str], CelFailure | None] = {}
_SELF_FIELD = re.compile(r"self\.(\w+)")
_BARE_SELF = re.compile(r"\bself\b(?!\.)")


def _reads(rule: dict[str, str], value: Any) -> str:
    """What a rule reads of `self`: the fields it names (all of `self` if it reads it bare)."""
    text = rule["rule"] + rule.get("messageExpression", "")
    if not isinstance(value, dict) or _BARE_SELF.search(text):
        return json.dumps(value, sort_keys=True, default=repr)
    read = {name: value.get(name) for name in sorted(set(_SELF_FIELD.findall(text)))}
    return json.dumps(read, sort_keys=True, default=repr)


def _node_failures(value: Any, schema: Schema, path: str) -> list[CelFailure]:
    """The rules at one node that `value` breaks. Each rule's verdict is memoised on what it
    reads: the rules are pure, and the fuzz tests check thousands of pools that share most of
    their fields (cel-python is slow)."""
    found = []
    self_value = None
    for rule in schema.get("x-kubernetes-validations", []):
        key = (path, rule["rule"], _reads(rule, value))
        if key not in _RULE_VERDICTS:
            if self_value is None:
                self_value = to_cel(value, schema)
            broken = not evaluate(rule["rule"], self_value)
            _RULE_VERDICTS[key] = _failure(rule, self_value, path) if broken else None
        failure = _RULE_VERDICTS[key]
        if failure is not None:
            found.append(failure)
    return found


def _child(path: str, key: str) -> str:
    """`path` extended by one key, the way `wire_path` spells it."""
    return f"{path}{wire_path(('x', key))[1:]}" if path else key


def cel_failures(value: Any, schema: Schema, path: str = "spec") -> list[CelFailure]:
    """Every x-kubernetes-validations rule under `schema` that `value` breaks (no oldSelf)."""
    failures = list(_node_failures(value, schema, path))
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra)
            if item is not None and isinstance(sub, dict):
                failures += cel_failures(item, sub, _child(path, str(key)))
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            failures += cel_failures(item, schema["items"], f"{path}[{index}]")
    return failures


def walk(schema: Schema, path: str = "") -> list[tuple[str, Schema]]:
    """Every node of a schema with its path (`.spec.roles`, `.spec.template.args[]`)."""
    nodes = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        nodes += walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        nodes += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += walk(schema["additionalProperties"], f"{path}{{}}")
    return nodes
