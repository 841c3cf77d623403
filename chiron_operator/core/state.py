"""Controller state that must survive an operator restart.

Plain frozen values, persisted in the pool's status through `to_wire`/`from_wire`. Times are
on the snapshot clock; None means 'never' (JSON has no infinity, and Kubernetes status is JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import TypeAdapter

from chiron_operator.core.enums import Role

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LocalState:
    """Local controller memory for one role; all learnt from the signals (kept when a change
    is not applied, see `control.actuation`).

    The `last_change_*` fields serve the fast path's settle rule (`control.fast_path`): when
    the size the pods run last changed, from what to what. Signals whose window began before
    that time still describe the old size, so they may not justify another move that way:
    `settled_ewma_itl_s` is the ITL EWMA restarted from the first sample measured wholly at
    the new size (None until there is one), which such a move must agree with.
    """

    ewma_itl_s: float | None = None
    throughput_before_increase_tokens_per_s: float | None = None
    target_max_num_seqs: int | None = None
    last_change_s: float | None = None
    last_change_from_seqs: int | None = None
    last_change_to_seqs: int | None = None
    settled_ewma_itl_s: float | None = None


@dataclass(frozen=True, slots=True)
class RestartState:
    """Restart-aware layer memory for one role: the pending target and the restart log.

    The pending target and its start are learnt; `restart_times_s` books restarts, so a
    restart that was not applied is taken out of it (`control.actuation.settle`).
    """

    pending_target_seqs: int | None = None
    pending_since_s: float | None = None
    restart_times_s: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class GuardState:
    """Guard-rail memory for one role: last scale events and recent recommendations.

    The recommendations are learnt; the last scale times book resizes, so a resize that was
    not applied leaves them as they were (`control.actuation.settle`).
    """

    last_scale_up_s: float | None = None
    last_scale_down_s: float | None = None
    recommendations: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True, slots=True)
class GlobalState:
    """Global controller memory: what one batch instance has been seen to deliver."""

    batch_instance_tokens_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class ChironState:
    """Everything Chiron's policy remembers between ticks."""

    local: Mapping[Role, LocalState] = field(default_factory=dict)
    restart: Mapping[Role, RestartState] = field(default_factory=dict)
    guards: Mapping[Role, GuardState] = field(default_factory=dict)
    global_scaling: GlobalState = field(default_factory=GlobalState)


# Building a TypeAdapter compiles a validator: once per type, not once per call.
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(kind: Any) -> TypeAdapter[Any]:
    found = _ADAPTERS.get(kind)
    if found is None:
        found = _ADAPTERS[kind] = TypeAdapter(kind)
    return found


def to_wire(value: object) -> Any:
    """JSON-ready form of any state value (dataclasses, enums, tuples)."""
    return _adapter(type(value)).dump_python(value, mode="json")


def from_wire(kind: type[T], data: object) -> T:
    """Rebuild a state value persisted with `to_wire`; raises pydantic.ValidationError."""
    value: T = _adapter(kind).validate_python(data)
    return value
