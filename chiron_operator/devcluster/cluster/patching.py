"""PATCH bodies applied the way kube-apiserver applies them, by content type.

- `application/json-patch+json`: RFC 6902; a failed op (a `test` that does not hold, a path
  that does not exist) is 422 Unprocessable Entity, which is what kopf's optimistic finalizer
  patches rely on to retry.
- `application/merge-patch+json`: RFC 7386; lists are replaced, `null` deletes a key.
- `application/strategic-merge-patch+json`: as merge patch, except that lists of objects with a
  patch merge key (containers by `name`, container ports by `containerPort`, volumeMounts by
  `mountPath`...) are merged element by element, `finalizers` are merged as a set, and the
  `$patch`, `$deleteFromPrimitiveList/...` and `$setElementOrder/...` directives kubectl sends
  are honoured (element order is not enforced). Lists without a merge key (tolerations, args,
  command) are replaced, as in Kubernetes. Custom resources reject it with 415, as they do.
- `application/apply-patch+yaml` (server-side apply) is rejected with 415: field ownership is
  not emulated, and a silent approximation would hide exactly the bugs apply is used to catch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

import jsonpatch
import jsonpointer

JSON_PATCH: Final = "application/json-patch+json"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"

# Patch merge keys of the built-in types (k8s.io/api `patchMergeKey` tags), by field name.
# `ports` is ambiguous (containers merge by containerPort, Services by port): see _merge_key.
MERGE_KEYS: Final = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
}
SET_LISTS: Final = frozenset({"finalizers"})
_DELETE_FROM: Final = "$deleteFromPrimitiveList/"
_DIRECTIVE_PREFIXES: Final = ("$setElementOrder/", "$retainKeys", "$patch")


class PatchError(ValueError):
    """A patch the server refuses; `status` is the HTTP status it answers with."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header (no parameters, lower case)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def apply_patch(
    obj: Mapping[str, Any], patch: object, content_type: str | None, *, custom: bool
) -> dict[str, Any]:
    """`obj` with `patch` applied; `custom` marks a custom resource (no strategic merge)."""
    kind = media_type(content_type)
    if kind == JSON_PATCH:
        return json_patch(obj, patch)
    if kind == STRATEGIC_MERGE_PATCH and custom:
        raise PatchError(
            415,
            "UnsupportedMediaType",
            "strategic merge patch is not supported for custom resources; use a merge patch",
        )
    if kind not in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        raise PatchError(415, "UnsupportedMediaType", f"unsupported patch type: {kind!r}")
    if not isinstance(patch, Mapping):
        raise PatchError(400, "BadRequest", "a merge patch must be a JSON object")
    if kind == MERGE_PATCH:
        return merge_patch(obj, patch)
    return strategic_merge_patch(obj, patch)


def json_patch(obj: Mapping[str, Any], ops: object) -> dict[str, Any]:
    """RFC 6902; any failing operation is 422 and leaves nothing applied."""
    if not isinstance(ops, list):
        raise PatchError(400, "BadRequest", "a JSON patch must be a list of operations")
    try:
        result = jsonpatch.apply_patch(copy.deepcopy(dict(obj)), ops, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(422, "Invalid", f"the JSON patch failed: {exc}") from exc
    except (TypeError, KeyError, ValueError) as exc:
        raise PatchError(422, "Invalid", f"malformed JSON patch: {exc}") from exc
    if not isinstance(result, dict):
        raise PatchError(422, "Invalid", "a JSON patch must leave an object")
    return result


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch."""
    result = copy.deepcopy(dict(target))
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            old = result.get(key)
            result[key] = merge_patch(old if isinstance(old, Mapping) else {}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def strategic_merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A strategic merge patch on a built-in type (see the module's description)."""
    if patch.get("$patch") == "replace":
        return _without_directives(patch)
    result = copy.deepcopy(dict(target))
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM):
            field = key[len(_DELETE_FROM) :]
            result[field] = [item for item in result.get(field) or [] if item not in value]
        elif key.startswith(_DIRECTIVE_PREFIXES):
            continue
        elif value is None or (isinstance(value, Mapping) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, Mapping):
            old = result.get(key)
            result[key] = strategic_merge_patch(old if isinstance(old, Mapping) else {}, value)
        elif isinstance(value, list):
            old = result.get(key)
            result[key] = _merge_list(key, old if isinstance(old, list) else [], value)
        else:
            result[key] = value
    return result


def _merge_key(field: str, items: Sequence[Any]) -> str | None:
    if field == "ports":
        return "containerPort" if any("containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field)


def _merge_list(field: str, old: list[Any], patch: list[Any]) -> list[Any]:
    if field in SET_LISTS:
        return old + [item for item in patch if item not in old]
    mappings = all(isinstance(item, Mapping) for item in patch)
    key = _merge_key(field, [*old, *patch]) if mappings else None
    if key is None:
        return [_without_directives(i) if isinstance(i, Mapping) else i for i in patch]
    if any(item.get("$patch") == "replace" for item in patch):
        return [_without_directives(i) for i in patch if i.get("$patch") != "replace"]
    result = [copy.deepcopy(item) for item in old]
    for item in patch:
        index = next((n for n, o in enumerate(result) if o.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            result = [o for o in result if o.get(key) != item.get(key)]
        elif index is None:
            result.append(_without_directives(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _without_directives(value: Mapping[str, Any]) -> dict[str, Any]:
    """A patch fragment as a plain object: directives dropped, nulls removed."""
    return strategic_merge_patch({}, {k: v for k, v in value.items() if k != "$patch"})
