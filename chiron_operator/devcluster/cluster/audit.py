"""An audit log of the dev cluster's API server, and the RBAC attributes of each request.

Every request is recorded with the identity that sent it (the bearer token: each client of the
dev cluster gets its own, as service accounts would) and mapped to what kube-apiserver's
authorizer sees: API group, resource (`resource/subresource`), verb, namespace and name. That is
what lets a test compare the calls an operator really makes with what its RBAC grants.

`request_attributes` follows kube-apiserver's RequestInfoFactory: GET on a collection is
`list` (`watch` with `watch=true`), GET on an object `get`, POST `create`, PUT `update`,
PATCH `patch`, DELETE `delete` (`deletecollection` on a collection). Paths outside
`/api/v1` and `/apis/GROUP/VERSION/...` resources (discovery, /version, /openapi) are
non-resource requests, which every authenticated user may make (`system:discovery`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp.web

NAMESPACE_SUBRESOURCES: Final = frozenset({"status", "finalize"})
READ_VERBS: Final = {"GET": "get", "HEAD": "get"}
WRITE_VERBS: Final = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
ANONYMOUS: Final = "anonymous"


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What an authorizer decides on: `resource` includes a subresource (`pods/status`)."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One request as it arrived."""

    time_s: float
    identity: str
    method: str
    path: str
    query: Mapping[str, str]
    content_type: str

    @property
    def attributes(self) -> RequestAttributes | None:
        """The RBAC attributes; None for a non-resource request (discovery)."""
        return request_attributes(self.method, self.path, self.query)


def _is_watch(query: Mapping[str, str]) -> bool:
    return query.get("watch", "").lower() in ("true", "1")


def _split(path: str) -> tuple[str, list[str]] | None:
    """(group, the parts after the version), or None for a non-resource path."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[:2] == ["api", "v1"]:
        return "", parts[2:]
    if len(parts) >= 4 and parts[0] == "apis":
        return parts[1], parts[3:]
    return None


def request_attributes(
    method: str, path: str, query: Mapping[str, str]
) -> RequestAttributes | None:
    """The authorizer's view of a request, as kube-apiserver derives it from method and URL."""
    split = _split(path)
    if split is None:
        return None
    group, parts = split
    namespace: str | None = None
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) > 1 else None
    if len(parts) > 2:
        resource = f"{resource}/{parts[2]}"
    if resource.startswith("namespaces"):
        namespace = None  # a Namespace is cluster-scoped: its name is the object's name
    return RequestAttributes(_verb(method, name, query), group, resource, namespace, name)


def _verb(method: str, name: str | None, query: Mapping[str, str]) -> str:
    upper = method.upper()
    if upper in READ_VERBS:
        if _is_watch(query):
            return "watch"
        return "get" if name is not None else "list"
    if upper == "DELETE" and name is None:
        return "deletecollection"
    return WRITE_VERBS.get(upper, upper.lower())


def identity_of(headers: Mapping[str, str]) -> str:
    """The bearer token a request carries (the dev cluster's notion of a user)."""
    auth = headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ANONYMOUS


class AuditLog:
    """Records every request of an API server (pass `record` as its `on_request`)."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, request: aiohttp.web.BaseRequest) -> None:
        self.records.append(
            AuditRecord(
                time_s=time.time(),
                identity=identity_of(request.headers),
                method=request.method,
                path=request.path,
                query=dict(request.query),
                content_type=request.headers.get("Content-Type", ""),
            )
        )

    def by(self, identity: str, since_s: float = 0.0) -> list[AuditRecord]:
        """The records of one identity, from `since_s` (unix seconds) on."""
        return [r for r in self.records if r.identity == identity and r.time_s >= since_s]
