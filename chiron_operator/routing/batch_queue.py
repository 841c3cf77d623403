"""The global batch queue: request groups, earliest deadline first, arrival order within a group.

A group is a Batch API batch or a single batch-class request (as in QLM, the scheduling unit
whose waiting time the batch controller bounds). Groups are ordered by deadline, ties by the
order they were first seen; a group's requests by the order they were queued. A request cut off
by a preemption or a lost pod goes back with its original place, so it is the next of its group
to go again. Deterministic and pure: no clock, no I/O.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter

from chiron_operator.routing.model import DEADLINE_BUCKET_S, Ticket

_Entry = tuple[float, int, int, Ticket]


class BatchQueue:
    """Batch tickets waiting for a slot, earliest-deadline group first."""

    __slots__ = ("_bucket_s", "_by_deadline", "_entries", "_group_order", "_sequence", "_tokens")

    def __init__(self, deadline_bucket_s: float = DEADLINE_BUCKET_S) -> None:
        self._entries: list[_Entry] = []
        self._group_order: dict[str, int] = {}
        self._sequence = 0
        self._bucket_s = deadline_bucket_s
        self._by_deadline: Counter[float] = Counter()
        self._tokens = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, ticket: Ticket) -> None:
        """Queue a new ticket at the end of its group."""
        self._sequence += 1
        ticket.sequence = self._sequence
        self._insert(ticket)

    def put_back(self, ticket: Ticket) -> None:
        """Queue a cut-off ticket again in its original place (it keeps its sequence)."""
        self._insert(ticket)

    def _insert(self, ticket: Ticket) -> None:
        order = self._group_order.setdefault(ticket.group, len(self._group_order))
        heapq.heappush(self._entries, (ticket.deadline_s, order, ticket.sequence, ticket))
        self._by_deadline[self.deadline_group(ticket.deadline_s)] += 1
        self._tokens += ticket.cost_tokens

    def peek(self) -> Ticket | None:
        return self._entries[0][3] if self._entries else None

    def pop(self) -> Ticket:
        """The next ticket to send: the earliest-deadline group's oldest."""
        ticket = heapq.heappop(self._entries)[3]
        group = self.deadline_group(ticket.deadline_s)
        left = self._by_deadline[group] - 1
        if left:
            self._by_deadline[group] = left
        else:
            del self._by_deadline[group]
        self._tokens -= ticket.cost_tokens
        if not self._entries:
            self._tokens = 0.0  # no float residue once empty
        return ticket

    def remove(self, request_ids: set[str]) -> list[Ticket]:
        """Take out every queued ticket whose id is in `request_ids` (a cancelled batch)."""
        kept = [e for e in self._entries if e[3].request_id not in request_ids]
        gone = [e[3] for e in self._entries if e[3].request_id in request_ids]
        self._entries = kept
        heapq.heapify(self._entries)
        self._by_deadline = Counter(self.deadline_group(e[0]) for e in kept)
        self._tokens = math.fsum(e[3].cost_tokens for e in kept)
        return gone

    def deadline_group(self, deadline_s: float) -> float:
        """The deadline group of a deadline: rounded down to the bucket (conservative)."""
        if not math.isfinite(deadline_s):
            return deadline_s
        return math.floor(deadline_s / self._bucket_s) * self._bucket_s

    def queued_by_deadline(self) -> dict[float, int]:
        """Queued requests per deadline group (what the batch controller groups by)."""
        return dict(self._by_deadline)

    @property
    def queued_tokens(self) -> float:
        """The queued requests' output-token estimate."""
        return self._tokens
