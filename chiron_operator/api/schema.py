"""Pydantic's JSON Schema turned into a Kubernetes structural OpenAPI v3 schema.

The API server accepts a narrower dialect than pydantic emits: no `$ref`, OpenAPI 3.0's
`nullable` instead of `anyOf [..., null]`, boolean `exclusiveMinimum`, no `const`, and every node
typed. Defaults also behave differently: the server fills a missing field from its own
`default` even inside a present parent, so an object's default is pushed down onto its
properties, where pydantic would have used the property type's defaults instead. Models whose
object defaults differ from their types' defaults (the roles) must merge the same way; a test
checks both defaulting paths agree.
"""

from __future__ import annotations

from typing import Any, Final

JsonSchema = dict[str, Any]

PRESERVE: Final = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING: Final = "x-kubernetes-int-or-string"

_DROPPED: Final = frozenset({"title", "$schema", "examples"})
_NULL: Final = {"type": "null"}
_KEY_ORDER: Final = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "anyOf",
    "items",
    "properties",
    "required",
    "additionalProperties",
)


class SchemaError(ValueError):
    """The models use a construct with no faithful structural-schema equivalent."""


def structural(schema: JsonSchema, *, defaults: bool = True) -> JsonSchema:
    """The structural form of a pydantic `model_json_schema(by_alias=True)` result.

    With `defaults=False` every default is dropped (for status, which only the operator writes:
    server-filled zeros there would read as observations).
    """
    defs: dict[str, JsonSchema] = schema.get("$defs", {})
    root = {key: value for key, value in schema.items() if key != "$defs"}
    return _convert(root, defs, defaults)


def _resolve(node: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    """`node` with its `$ref` (or one-element `allOf`) inlined; its own keys win."""
    node = dict(node)
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:
        del node["allOf"]
        node = {**_resolve(all_of[0], defs), **node}
    ref = node.pop("$ref", None)
    if ref is not None:
        node = {**_resolve(defs[ref.removeprefix("#/$defs/")], defs), **node}
    return node


def _nullable(node: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    """`anyOf [X, null]` as X with `nullable: true`."""
    any_of = node.get("anyOf")
    if not isinstance(any_of, list) or _NULL not in any_of:
        return node
    rest = [option for option in any_of if option != _NULL]
    if len(rest) != 1:
        raise SchemaError(f"unions other than Optional have no structural form: {any_of}")
    outer = {key: value for key, value in node.items() if key != "anyOf"}
    if outer.get("default", "") is None:
        del outer["default"]
    return {**_resolve(rest[0], defs), **outer, "nullable": True}


def _convert(node: JsonSchema, defs: dict[str, JsonSchema], defaults: bool) -> JsonSchema:
    node = _nullable(_resolve(node, defs), defs)
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "default" and not defaults):
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs, defaults) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, defaults)
        elif key == "additionalProperties":
            _additional(out, node, value, defs, defaults)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out[key.replace("exclusiveM", "m")] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "default":
            out[key] = _without_nulls(value)
        else:
            out[key] = value
    _check_typed(out)
    _push_defaults(out)
    return _ordered(out)


def _additional(
    out: JsonSchema, node: JsonSchema, value: Any, defs: dict[str, JsonSchema], defaults: bool
) -> None:
    if isinstance(value, dict):
        out["additionalProperties"] = _convert(value, defs, defaults)
    elif value is True and not node.get(PRESERVE):
        raise SchemaError(f"open object without {PRESERVE}: {sorted(node)}")
    # additionalProperties false needs no keyword: the server prunes unknown fields, and a
    # structural schema may not combine it with properties.


def _check_typed(node: JsonSchema) -> None:
    if "type" in node or node.get(PRESERVE) or node.get(INT_OR_STRING):
        return
    raise SchemaError(f"structural schemas type every node: {sorted(node)}")


def _without_nulls(value: Any) -> Any:
    # In our models an absent field and a null one mean the same; a default full of nulls
    # would only clutter every stored object.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _like_schema(value: Any, node: JsonSchema) -> Any:
    """An object default with its keys in the schema's property order (pydantic sorts them)."""
    properties = node.get("properties")
    if not isinstance(value, dict) or not isinstance(properties, dict):
        return value
    ordered = {k: _like_schema(value[k], sub) for k, sub in properties.items() if k in value}
    return ordered | {k: v for k, v in value.items() if k not in ordered}


def _push_defaults(node: JsonSchema) -> None:
    default = node.get("default")
    properties = node.get("properties")
    if not isinstance(default, dict) or not isinstance(properties, dict):
        return
    node["default"] = _like_schema(default, node)
    for name, sub in properties.items():
        if name in default:
            properties[name] = _ordered({**sub, "default": default[name]})
            _push_defaults(properties[name])


def _ordered(node: JsonSchema) -> JsonSchema:
    def rank(key: str) -> tuple[int, str]:
        if key in _KEY_ORDER:
            return (_KEY_ORDER.index(key), key)
        return (len(_KEY_ORDER), key)

    return {key: node[key] for key in sorted(node, key=rank)}
