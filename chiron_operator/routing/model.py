"""What the routing core works on and answers with: tickets, pod slots, actions and reasons.

A `Ticket` is one request as the router sees it (its class, priority, deadline group and
whether it may still be cut off); a `PodSlots` is one pod's admission book (its cap and what
this router has in flight there, per class). Every call into the router answers with `Action`s
the driver performs (send, cut off, refuse), each carrying a `RouteReason`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from chiron_operator.core.enums import RequestClass, Role

INTERACTIVE_PRIORITY = 0
"""vLLM's default priority: interactive requests are served first under the priority policy."""
BATCH_PRIORITY = 10
"""The `priority` batch work carries upstream, so vLLM orders it behind interactive work."""
DEADLINE_BUCKET_S = 10.0
"""How finely queued batch work is grouped by deadline for the batch controller (the queue
itself orders by exact deadlines). Deadlines are rounded down, so a group looks at most this
much more urgent than it is: small next to a completion window (10 s at least), and few enough
groups that a stream of batch-class requests with their own deadlines stays a few hundred
series an hour at most. A minute made a 30 s batch look overdue on arrival."""


class RouteReason(StrEnum):
    """Why the router did what it did with a request. Values are CamelCase, as Kubernetes reasons.

    Append new members; never rename one (they label the gateway's metrics and logs).
    """

    TO_INTERACTIVE = "RoutedToInteractive"
    OVERFLOW_TO_MIXED = "OverflowedToMixed"
    PREEMPTED_BATCH = "PreemptedBatchOnMixed"
    QUEUED = "Queued"
    DEQUEUED = "Dequeued"
    QUEUE_FULL = "QueueFull"
    QUEUE_TIMEOUT = "QueueWaitExceeded"
    NO_READY_POD = "NoReadyPod"
    BATCH_TO_BATCH_POD = "BatchToBatchPod"
    BATCH_TO_MIXED = "BatchToSpareMixedSlot"
    CUT_OFF = "CutOffForInteractive"
    RETRY = "RetriedOnAnotherPod"
    BATCH_TO_INTERACTIVE = "BatchToSpareInteractiveSlot"
    PREEMPTED_LENT_BATCH = "PreemptedBatchOnInteractive"


@dataclass(eq=False, slots=True)
class Ticket:
    """One request in the router's books (identity equality: one object per request).

    `group` names its batch group (a Batch API batch, or the request itself); `deadline_s` is
    the absolute deadline that orders groups (earliest first); `preemptible` turns False once
    the driver has relayed bytes to the client (a cut-off then could not be hidden by a resend).
    `cost_tokens` is the output-token estimate the batch queue reports. `started` turns True
    when the pod has produced the request's first token (`PoolRouter.started`), and False
    again when it leaves the pod (a resend prefills again).
    """

    request_id: str
    request_class: RequestClass
    arrival_s: float
    deadline_s: float = math.inf
    group: str = ""
    cost_tokens: float = 0.0
    preemptible: bool = True
    pod: str | None = None
    sequence: int = 0
    cut_offs: int = 0
    retries: int = 0
    started: bool = False

    @property
    def interactive(self) -> bool:
        return self.request_class is RequestClass.INTERACTIVE

    @property
    def priority(self) -> int:
        """The `priority` field the request carries upstream."""
        return INTERACTIVE_PRIORITY if self.interactive else BATCH_PRIORITY


@dataclass(eq=False, slots=True)
class PodSlots:
    """One pod's admission book: its cap and this router's requests in flight on it.

    `cap_seqs` is this router's share of the pod's cap; `batch` keeps batch tickets in the order
    they were sent, so the newest is cut off first.
    """

    name: str
    role: Role
    cap_seqs: int
    ready: bool = True
    interactive: set[Ticket] = field(default_factory=set)
    batch: list[Ticket] = field(default_factory=list)
    in_flight: int = 0
    """len(interactive) + len(batch), kept by the router as it sends and releases: the
    placement loops read it for every pod on every request."""
    batch_prefilling: int = 0
    """Batch tickets in `batch` whose first token has not come yet, kept the same way."""

    @property
    def free_slots(self) -> int:
        return max(0, self.cap_seqs - self.in_flight) if self.ready else 0

    def newest_preemptible_batch(self) -> Ticket | None:
        for ticket in reversed(self.batch):
            if ticket.preemptible:
                return ticket
        return None


@dataclass(frozen=True, slots=True)
class RoutingTuning:
    """The router's tunables (the pool's `spec.gateway`).

    - `max_queued_interactive`: interactive requests that may wait at the pool level for a slot;
      one more is refused (429, or 503 when the pool has no ready pod).
    - `max_queue_wait_s`: the longest an interactive request waits before it is refused.
    - `mixed_reserve_slots`: slots of every mixed pod batch work may not take, kept free for
      interactive arrivals (0: batch work fills mixed pods and is cut off when needed).
    - `preempt_batch`: whether an interactive request may cut off batch work on a full mixed pod
      (or on an interactive pod that lent it slots).
    - `batch_on_interactive`: whether batch work may borrow an interactive pod's free slots when
      no batch or mixed pod has one (an interactive arrival cuts it off again; never without
      `preempt_batch`).
    - `interactive_reserve_slots`: slots of every interactive pod batch work never borrows.
    - `batch_prefills_per_pod`: batch requests a mixed or interactive pod may hold before their
      first token (0: no limit). Their prefills share every step with the interactive requests'
      decodes: a backlog landing on mixed pods all at once stalls the interactive answers there.
      Batch pods are not limited.
    """

    max_queued_interactive: int = 256
    max_queue_wait_s: float = 30.0
    mixed_reserve_slots: int = 0
    preempt_batch: bool = True
    batch_on_interactive: bool = True
    interactive_reserve_slots: int = 8
    batch_prefills_per_pod: int = 2


@dataclass(frozen=True, slots=True)
class Send:
    """Send `ticket` to `pod` now."""

    ticket: Ticket
    pod: str
    reason: RouteReason


@dataclass(frozen=True, slots=True)
class CutOff:
    """Close `ticket`'s upstream stream on `pod` (vLLM aborts it); it is queued again."""

    ticket: Ticket
    pod: str
    reason: RouteReason


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer `ticket`'s client with `status` (429 or 503), saying why, and when to retry."""

    ticket: Ticket
    status: int
    reason: RouteReason
    message: str
    retry_after_s: float


@dataclass(frozen=True, slots=True)
class Wait:
    """`ticket` waits at the pool level (an interactive request with no slot anywhere)."""

    ticket: Ticket
    reason: RouteReason
    position: int


Action = Send | CutOff | Refuse | Wait


def pod_cap_seqs(max_num_seqs: int, target_seqs: int | None, replicas: int, index: int) -> int:
    """This router's share of one pod's cap.

    The pod's cap is the smaller of its `--max-num-seqs` and its role's target batch size (the
    local controller's fast path). Gateway replicas split it without talking to each other:
    replica `index` of `replicas` takes floor(cap*(i+1)/n) - floor(cap*i/n), so the shares
    always sum to the cap and differ by at most one.
    """
    cap = max_num_seqs if target_seqs is None else min(max_num_seqs, target_seqs)
    cap = max(cap, 0)
    n = max(replicas, 1)
    i = min(max(index, 0), n - 1)
    return (cap * (i + 1)) // n - (cap * i) // n
