"""The simulator's clock: a heap of events totally ordered by (time, priority, sequence).

Ties in time are broken by the event kind (its value is its priority), then by insertion order,
so a run is deterministic without ever comparing payloads.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from enum import IntEnum
from itertools import count


class EventKind(IntEnum):
    """What an event does; the value orders events that fall at the same instant.

    An arrival sorts before an iteration boundary at the same time, so a request that arrives
    exactly when an iteration ends is admitted at that boundary (in both step modes). A router's
    timer (the gateway's queue expiry) comes after the boundaries, so a slot freed at the very
    instant a wait runs out still takes the request. Scrapes and control ticks come last, so
    they see the state after everything else at that instant.
    """

    INSTANCE_READY = 0
    ACTUATION = 1
    ARRIVAL = 2
    ITERATION = 3
    DRAIN_DEADLINE = 4
    ROUTER_TIMER = 5
    SCRAPE = 6
    CONTROL_TICK = 7


Event = tuple[float, int, int, object, int]
"""(time_s, kind, sequence, payload, version): `version` lets an owner invalidate its events."""


class EventQueue:
    """A min-heap of events; stale events are skipped by their owners, never removed.

    `heap` and `next_sequence` are public so that the hottest callers (the engine's loop, pod
    boundaries) can pop and push without a method call per event; a direct push must take its
    sequence number from `next_sequence()` like `push` does.
    """

    __slots__ = ("heap", "next_sequence")

    def __init__(self) -> None:
        self.heap: list[Event] = []
        self.next_sequence: Callable[[], int] = count(1).__next__

    def push(
        self, time_s: float, kind: EventKind, payload: object = None, version: int = 0
    ) -> None:
        """Schedule `kind` at `time_s`; `version` comes back with it for staleness checks."""
        heapq.heappush(self.heap, (time_s, kind, self.next_sequence(), payload, version))

    def pop(self) -> Event:
        """The earliest event; raises IndexError when empty."""
        return heapq.heappop(self.heap)

    def peek_time_s(self) -> float:
        """Time of the earliest event, +inf when empty."""
        return self.heap[0][0] if self.heap else float("inf")

    def __len__(self) -> int:
        return len(self.heap)
