"""What the API server does with a pool, done here: defaulting, schema validation, CEL rules.

kubernetes-validate checks the CRD object but skips custom resources, so pools are checked
against the CRD's openAPIV3Schema with jsonschema (with unknown fields rejected, as kubectl's
default strict field validation does) and the x-kubernetes-validations rules are evaluated with
cel-python, `self` bound at each rule's node and typed by the schema as the server types it.
"""

from __future__ import annotations

import copy
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


def schema_errors(value: Any, schema: Schema, root: str = "spec") -> list[tuple[str, str]]:
    """(field path, message) of every schema violation, the path naming the field at fault."""
    validator = jsonschema.Draft4Validator(as_jsonschema(schema))
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


def cel_failures(value: Any, schema: Schema, path: str = "spec") -> list[CelFailure]:
    """Every x-kubernetes-validations rule under `schema` that `value` breaks (no oldSelf)."""
    failures = []
    rules = schema.get("x-kubernetes-validations", [])
    if rules:
        self_value = to_cel(value, schema)
        failures += [
            _failure(rule, self_value, path)
            for rule in rules
            if not evaluate(rule["rule"], self_value)
        ]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra)
            if item is not None and isinstance(sub, dict):
                failures += cel_failures(item, sub, wire_path((path, key)))
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
