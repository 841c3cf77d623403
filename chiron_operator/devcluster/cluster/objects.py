"""What kube-apiserver does to an object on every write, as pure functions.

Server-owned metadata (uid, resourceVersion, generation, creationTimestamp), the status
subresource's split of an object into a spec half and a status half, optimistic concurrency
on resourceVersion, and the Scale view of scalable resources. Stored versions are never edited
in place: every function returns a new object, so a version already handed to a watcher or a
test cannot change under it.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

Json = dict[str, Any]

# apimachinery's rand.String alphabet: no vowels (no words) and no look-alike characters.
NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
SERVER_OWNED: Final = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


class WriteError(Exception):
    """A write the server refuses, with the HTTP status and reason it answers with."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def timestamp(now: datetime | None = None) -> str:
    """An RFC 3339 timestamp with second precision, as Kubernetes writes them."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5, rng: random.Random | None = None) -> str:
    """A random name suffix in Kubernetes' alphabet (generateName, pod names)."""
    pick = (rng or random).choice
    return "".join(pick(NAME_ALPHABET) for _ in range(length))


def metadata_of(obj: Mapping[str, Any]) -> Json:
    """The object's metadata (empty when absent or malformed)."""
    metadata = obj.get("metadata")
    return dict(metadata) if isinstance(metadata, Mapping) else {}


def created(
    body: Mapping[str, Any],
    *,
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None,
    resource_version: int,
    status_subresource: bool,
) -> Json:
    """A new object as stored: server-owned metadata stamped, client-set ones discarded."""
    obj = copy.deepcopy(dict(body))
    obj["apiVersion"], obj["kind"] = api_version, kind
    metadata = {
        k: v for k, v in metadata_of(obj).items() if k not in (*SERVER_OWNED, "resourceVersion")
    }
    metadata.update(
        name=name,
        uid=str(uuid.uuid4()),
        resourceVersion=str(resource_version),
        generation=1,
        creationTimestamp=timestamp(),
    )
    if namespace is not None:
        metadata["namespace"] = namespace
    else:
        metadata.pop("namespace", None)
    obj["metadata"] = metadata
    if status_subresource:
        # Status is written through /status only; a client cannot create an object that
        # claims to be, say, already available.
        obj.pop("status", None)
    return obj


def check_precondition(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """409 when `new` names a resourceVersion and it is not the stored one (optimistic lock)."""
    wanted = metadata_of(new).get("resourceVersion")
    current = metadata_of(old).get("resourceVersion")
    if wanted not in (None, "") and str(wanted) != str(current):
        raise WriteError(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version "
            "and try again",
        )


def updated(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    subresource: str | None,
    status_subresource: bool,
    resource_version: int,
) -> Json:
    """The stored object after a write of `new` (a patched or replaced object) to `old`.

    With a status subresource, writes to the object keep the old status and writes to /status
    keep everything but the status. Server-owned metadata is kept, a deletionTimestamp can
    never be removed, and generation counts changes outside metadata and status.
    """
    if subresource == "status":
        result = copy.deepcopy(dict(old))
        result["status"] = copy.deepcopy(new.get("status"))
        if result["status"] is None:
            del result["status"]
    else:
        result = copy.deepcopy(dict(new))
        if status_subresource:
            result.pop("status", None)
            if "status" in old:
                result["status"] = copy.deepcopy(old["status"])
    old_meta = metadata_of(old)
    metadata = metadata_of(result)
    for key in (*SERVER_OWNED, "name", "namespace", "generation"):
        metadata.pop(key, None)
        if key in old_meta:
            metadata[key] = old_meta[key]
    metadata["resourceVersion"] = str(resource_version)
    result["apiVersion"], result["kind"] = old.get("apiVersion"), old.get("kind")
    if _spec_part(result, status_subresource) != _spec_part(old, status_subresource):
        metadata["generation"] = int(old_meta.get("generation") or 0) + 1
    result["metadata"] = metadata
    return result


def _spec_part(obj: Mapping[str, Any], status_subresource: bool) -> Json:
    ignored = ("metadata", "status") if status_subresource else ("metadata",)
    return {key: value for key, value in obj.items() if key not in ignored}


def with_metadata(obj: Mapping[str, Any], resource_version: int, **fields: object) -> Json:
    """A copy of `obj` with metadata fields set and a new resourceVersion."""
    result = copy.deepcopy(dict(obj))
    metadata = metadata_of(result)
    metadata.update(fields, resourceVersion=str(resource_version))
    result["metadata"] = metadata
    return result


def scale_of(obj: Mapping[str, Any]) -> Json:
    """The autoscaling/v1 Scale view of a Deployment-like object (its /scale subresource)."""
    metadata = metadata_of(obj)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in metadata
        },
        "spec": {"replicas": int(spec.get("replicas", 1))},
        "status": {
            "replicas": int(status.get("replicas") or 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        },
    }


def scaled(obj: Mapping[str, Any], scale: Mapping[str, Any]) -> Json:
    """`obj` with the replicas a written Scale asks for."""
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise WriteError(
            422, "Invalid", f"spec.replicas: must be a non-negative integer: {replicas!r}"
        )
    result = copy.deepcopy(dict(obj))
    result.setdefault("spec", {})["replicas"] = replicas
    return result


def owner_uids(obj: Mapping[str, Any]) -> set[str]:
    """The uids of an object's owners."""
    return {str(ref.get("uid")) for ref in metadata_of(obj).get("ownerReferences") or []}


def crd_status() -> Json:
    """The status a CustomResourceDefinition gets once its names are accepted."""
    now = timestamp()
    return {
        "conditions": [
            {"type": kind, "status": "True", "reason": reason, "lastTransitionTime": now}
            for kind, reason in (
                ("NamesAccepted", "NoConflicts"),
                ("Established", "InitialNamesAccepted"),
            )
        ]
    }
