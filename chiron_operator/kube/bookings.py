"""The operator's stamps on a role Deployment: restarts and resizes, as annotations. Pure.

They go into the very patch that makes the change, so a Deployment that was restarted or
resized always says when, even if the operator died before it could write the pool's status
(where the controllers otherwise keep them). The tick reads them back and merges them into the
controllers' memory (`core.state.with_bookings`), so a lost status write can never reset the
restart budget or a cooldown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from chiron_operator.core.state import Bookings
from chiron_operator.kube.labels import (
    ANNOTATION_LAST_SCALE_DOWN,
    ANNOTATION_LAST_SCALE_UP,
    ANNOTATION_RESTARTS,
)

# A restart log longer than any budget could use is cut to its newest entries: the annotation
# must stay small whatever a misconfigured budget asks for.
MAX_RESTARTS_KEPT = 64


def _stamp(value_s: float) -> str:
    return f"{value_s:.3f}"


def booking_annotations(booked: Bookings) -> dict[str, str]:
    """The annotations recording `booked` (stamps it has none of are left out)."""
    out: dict[str, str] = {}
    if booked.restart_times_s:
        newest = sorted(booked.restart_times_s)[-MAX_RESTARTS_KEPT:]
        out[ANNOTATION_RESTARTS] = ",".join(_stamp(t) for t in newest)
    if booked.last_scale_up_s is not None:
        out[ANNOTATION_LAST_SCALE_UP] = _stamp(booked.last_scale_up_s)
    if booked.last_scale_down_s is not None:
        out[ANNOTATION_LAST_SCALE_DOWN] = _stamp(booked.last_scale_down_s)
    return out


def _parse_s(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_bookings(deployment: Mapping[str, Any]) -> Bookings:
    """The stamps a Deployment carries; an unreadable one counts as absent (never as 0)."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    restarts = str(annotations.get(ANNOTATION_RESTARTS) or "")
    times = tuple(t for t in (_parse_s(p) for p in restarts.split(",") if p) if t is not None)
    return Bookings(
        restart_times_s=times,
        last_scale_up_s=_parse_s(str(annotations.get(ANNOTATION_LAST_SCALE_UP) or "x")),
        last_scale_down_s=_parse_s(str(annotations.get(ANNOTATION_LAST_SCALE_DOWN) or "x")),
    )
