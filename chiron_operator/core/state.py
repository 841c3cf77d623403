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
    not applied leaves them as they were (`control.actuation.settle`). `unschedulable_retry_s`
    is when a role capped for pods no node fits may try to grow past its scheduled pods again.
    """

    last_scale_up_s: float | None = None
    last_scale_down_s: float | None = None
    recommendations: tuple[tuple[float, int], ...] = ()
    unschedulable_retry_s: float | None = None


@dataclass(frozen=True, slots=True)
class GlobalState:
    """Global controller memory: what one batch instance has been seen to deliver, and how
    long a new pod takes to become ready (`control.startup`): `starting_since_s` holds when each
    pod still starting was first seen, `startup_s` the smoothed time from there to ready."""

    batch_instance_tokens_per_s: float | None = None
    startup_s: float | None = None
    starting_since_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChironState:
    """Everything Chiron's policy remembers between ticks."""

    local: Mapping[Role, LocalState] = field(default_factory=dict)
    restart: Mapping[Role, RestartState] = field(default_factory=dict)
    guards: Mapping[Role, GuardState] = field(default_factory=dict)
    global_scaling: GlobalState = field(default_factory=GlobalState)


@dataclass(frozen=True, slots=True)
class Bookings:
    """What a role's Deployment records of the operator's own actions on it.

    The restart budget and the cooldowns must hold across an operator killed between writing
    a Deployment and writing the pool's status: the status copy of these stamps is then lost,
    the Deployment's (written in the same patch as the change) is not.
    """

    restart_times_s: tuple[float, ...] = ()
    last_scale_up_s: float | None = None
    last_scale_down_s: float | None = None


def _latest(first: float | None, second: float | None) -> float | None:
    known = [t for t in (first, second) if t is not None]
    return max(known) if known else None


def with_bookings(state: ChironState, bookings: Mapping[Role, Bookings]) -> ChironState:
    """`state` knowing every restart and resize the Deployments record (the union of both).

    A stamp only in status (a Deployment replaced by hand) and one only on the Deployment (a
    status write lost to a crash) both happened; keeping both never allows an action early.
    """
    if not bookings:
        return state
    restart = dict(state.restart)
    guards = dict(state.guards)
    for role, booked in bookings.items():
        old_restart = restart.get(role, RestartState())
        times = tuple(sorted({*old_restart.restart_times_s, *booked.restart_times_s}))
        restart[role] = RestartState(
            old_restart.pending_target_seqs, old_restart.pending_since_s, times
        )
        old_guard = guards.get(role, GuardState())
        guards[role] = GuardState(
            last_scale_up_s=_latest(old_guard.last_scale_up_s, booked.last_scale_up_s),
            last_scale_down_s=_latest(old_guard.last_scale_down_s, booked.last_scale_down_s),
            recommendations=old_guard.recommendations,
            unschedulable_retry_s=old_guard.unschedulable_retry_s,
        )
    return ChironState(state.local, restart, guards, state.global_scaling)


def bookings_of(state: ChironState, role: Role) -> Bookings:
    """The stamps of `state` a role's Deployment carries (written with every change)."""
    restart = state.restart.get(role, RestartState())
    guard = state.guards.get(role, GuardState())
    return Bookings(restart.restart_times_s, guard.last_scale_up_s, guard.last_scale_down_s)


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
