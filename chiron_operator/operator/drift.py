"""Whether a live object lacks what the operator built for it. Pure.

Reconciling runs on every spec change and every operator start; writing every object blindly
each time would be creates answered 409 and patches that change nothing, each a write every
watcher of the object sees. These checks keep those writes to the objects that need them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Json = dict[str, Any]


def contains(have: object, want: object) -> bool:
    """`want` is in `have`: maps key by key (extra keys allowed), lists item by item.

    "Lacks" rather than "differs": the API server adds defaults to what it stores
    (imagePullPolicy, dnsPolicy...), which must not read as a change on every reconcile.
    """
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            contains(have.get(key), value) for key, value in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(contains(h, w) for h, w in zip(have, want, strict=True))
        )
    return have == want


def labels_differ(current: Json, wanted: Json) -> bool:
    """Whether the live object lacks one of the labels the built one sets."""
    labels = (current.get("metadata") or {}).get("labels") or {}
    return any(labels.get(k) != v for k, v in wanted["metadata"]["labels"].items())


def service_differs(current: Json, wanted: Json) -> bool:
    """Whether a live Service selects or exposes other than the built one, or lacks a label."""
    have, want = current.get("spec") or {}, wanted["spec"]
    return (
        have.get("selector") != want["selector"]
        or have.get("ports") != want["ports"]
        or labels_differ(current, wanted)
    )
