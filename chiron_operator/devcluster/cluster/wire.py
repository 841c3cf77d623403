"""How the dev cluster's API server reads requests: headers, options, namespaces, statuses.

Small pure functions over kmock's parsed `Request` (pinned to kmock 0.8 like the server).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kmock
from kmock._internal import rendering

from chiron_operator.devcluster.cluster.objects import WriteError
from chiron_operator.devcluster.cluster.patching import media_type

Json = dict[str, Any]


def header(request: rendering.Request, name: str) -> str | None:
    """A request header, by case-insensitive name."""
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), None)


def check_body_type(request: rendering.Request) -> None:
    """415 for a body in anything but JSON."""
    # Only JSON is spoken here (no Content-Type means JSON, as for kube-apiserver). kubectl's
    # imperative generators (`kubectl create configmap ...`) send protobuf: they get a 415.
    media = media_type(header(request, "Content-Type"))
    if request.method in ("POST", "PUT") and media and "json" not in media:
        raise WriteError(
            415,
            "UnsupportedMediaType",
            f"the body's media type {media!r} is not supported; send JSON",
        )


def namespace(request: rendering.Request, info: kmock.ResourceInfo, metadata: Json) -> str | None:
    """The namespace a new object goes to (None for cluster-scoped resources)."""
    if not info.namespaced:
        return None
    given = metadata.get("namespace")
    if request.namespace and given and request.namespace != given:
        raise WriteError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    namespace = request.namespace or given
    if not namespace:
        raise WriteError(400, "BadRequest", "the namespace of a namespaced object is required")
    return str(namespace)


def delete_options(request: rendering.Request) -> Json:
    """DeleteOptions from the body and the query (the query wins, as in Kubernetes)."""
    options = dict(request.data) if isinstance(request.data, Mapping) else {}
    grace = request.params.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
    options["gracePeriodSeconds"] = None if grace is None else int(grace)
    if "propagationPolicy" in request.params:
        options["propagationPolicy"] = request.params["propagationPolicy"]
    return options


def timeout(request: rendering.Request) -> float | None:
    """A watch's `timeoutSeconds`, if any."""
    text = request.params.get("timeoutSeconds")
    return float(text) if text else None


def gone(since: str) -> Json:
    """The Status a watch from an expired resourceVersion ends with (410 Gone)."""
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: {since}",
        "reason": "Expired",
        "code": 410,
    }
