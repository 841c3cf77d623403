"""Routing and admission for one pool: which pod gets a request, and when.

The order (DESIGN.md section 2a), for every driver (the gateway, the simulator):

- An interactive request goes to the ready interactive pod with a free slot and the least load;
  else to the ready mixed pod with a free slot and the least interactive load; else, when a full
  mixed pod runs batch work that may still be cut off, that pod's newest batch request is cut
  off (vLLM aborts a request whose client disconnects; real vLLM does not preempt at the
  `--max-num-seqs` cap by itself) and the interactive request takes its slot; else it waits in
  a bounded pool-level queue, never behind batch work; else it is refused: 429, or 503 when no
  interactive or mixed pod is ready.
- Batch work (the global queue, earliest-deadline group first) fills batch pods first, then the
  spare slots of mixed pods (less `mixed_reserve_slots`), then, with `batch_on_interactive`,
  the spare slots of interactive pods (less `interactive_reserve_slots`), and only while no
  interactive request waits, so it never takes the slot an interactive request is waiting for.
  Lent slots are the warm capacity a backlog due within a cold start can use: a 70B pool's
  idle interactive pod met 99.9% of such a backlog's deadlines where waiting 12 minutes for
  batch pods met 55% (docs/BENCHMARKS.md). An interactive request that finds its pods full
  cuts lent batch work off like batch work on a mixed pod. A mixed or interactive pod takes
  batch work only while it holds fewer than `batch_prefills_per_pod` batch requests still
  waiting for their first token (the driver reports first tokens with `started`): their
  prefills share every step with the interactive decodes beside them, and a backlog landing on
  the mixed pods at once stalled the interactive answers there.
- A slot is one request in flight; a pod never has more of this router's requests in flight
  than its cap (`PodSlots.cap_seqs`), except after its cap was lowered, when it takes nothing
  new until it is below the new cap.

`PoolRouter` is a deterministic state machine with no I/O, no clock and no randomness: time is
an argument, and every call returns the `Action`s the driver performs, each with its reason.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from chiron_operator.core.enums import Role
from chiron_operator.routing.batch_queue import BatchQueue
from chiron_operator.routing.model import (
    DEADLINE_BUCKET_S,
    Action,
    CutOff,
    PodSlots,
    Refuse,
    RouteReason,
    RoutingTuning,
    Send,
    Ticket,
    Wait,
)

_Waiter = tuple[Ticket, float]
_BATCH_REASONS = {
    Role.BATCH: RouteReason.BATCH_TO_BATCH_POD,
    Role.MIXED: RouteReason.BATCH_TO_MIXED,
    Role.INTERACTIVE: RouteReason.BATCH_TO_INTERACTIVE,
}


class PoolRouter:
    """The admission book of one pool: pods and their slots, the interactive wait queue and the
    global batch queue."""

    __slots__ = ("_by_role", "batch", "pods", "tuning", "waiting")

    def __init__(
        self, tuning: RoutingTuning, *, deadline_bucket_s: float = DEADLINE_BUCKET_S
    ) -> None:
        self.tuning = tuning
        self.pods: dict[str, PodSlots] = {}
        self.waiting: deque[_Waiter] = deque()
        self.batch = BatchQueue(deadline_bucket_s)
        # Each role's pods in `pods`' order (which breaks ties between equal loads), rebuilt
        # only when a pod joins, leaves or changes role: placement scans one role, not all.
        self._by_role: dict[Role, list[PodSlots]] = {role: [] for role in Role}

    # Pods -------------------------------------------------------------------------------------

    def set_pod(self, name: str, role: Role, cap_seqs: int, *, ready: bool) -> list[Action]:
        """Add or update a pod (its role, its cap, whether it takes new requests).

        A pod that is not ready (starting, terminating) keeps its requests in flight but takes
        no new ones. Freed or new slots are filled at once.
        """
        pod = self.pods.get(name)
        if pod is None or pod.role is not role:
            pod = self.pods[name] = PodSlots(name, role, max(cap_seqs, 0), ready)
            self._index()
        pod.cap_seqs, pod.ready = max(cap_seqs, 0), ready
        return self._fill()

    def _index(self) -> None:
        self._by_role = {role: [] for role in Role}
        for pod in self.pods.values():
            self._by_role[pod.role].append(pod)

    def remove_pod(self, name: str) -> list[Ticket]:
        """Forget a pod that is gone; returns the requests it still had (the driver's to retry)."""
        pod = self.pods.pop(name, None)
        if pod is None:
            return []
        self._index()
        orphans = [*pod.interactive, *pod.batch]
        for ticket in orphans:
            ticket.pod = None
        return orphans

    # Requests ---------------------------------------------------------------------------------

    def submit(self, ticket: Ticket, now_s: float) -> list[Action]:
        """A new request: send it, queue it, or refuse it."""
        if not ticket.interactive:
            self.batch.push(ticket)
            return self._fill()
        if self.waiting:
            return [self._wait_or_refuse(ticket, now_s)]
        actions = self._place_interactive(ticket, avoid=None)
        return actions or [self._wait_or_refuse(ticket, now_s)]

    def finish(self, ticket: Ticket) -> list[Action]:
        """A request ended upstream (completed or failed for good): its slot is free."""
        self._release(ticket)
        return self._fill()

    def finish_many(self, tickets: Iterable[Ticket]) -> list[Action]:
        """Requests that ended at the same instant: every slot is freed before any is refilled,
        so that none of them is cut off (or counted in flight) as if it still ran."""
        for ticket in tickets:
            self._release(ticket)
        return self._fill()

    def retry(self, ticket: Ticket, now_s: float) -> list[Action]:
        """A request's upstream connection failed before any byte came back: route it again,
        away from the pod that failed (interactive) or back in its place in the queue (batch)."""
        failed = ticket.pod
        self._release(ticket)
        ticket.retries += 1
        if not ticket.interactive:
            self.batch.put_back(ticket)
            return self._fill()
        # Another pod if one has room; the same one rather than a wait beside its free slot.
        placed = self._place_interactive(ticket, avoid=failed) or self._place_interactive(
            ticket, avoid=None
        )
        return [*placed, *self._fill()] if placed else [self._wait_or_refuse(ticket, now_s)]

    def started(self, ticket: Ticket) -> list[Action]:
        """The pod sent `ticket`'s first token: a batch request no longer counts as a prefill
        on its pod, which may take more batch work."""
        if ticket.started or ticket.pod is None:
            return []
        ticket.started = True
        pod = self.pods.get(ticket.pod)
        if pod is None or ticket.interactive:  # a ticket's pod has it in its books
            return []
        limit = self.tuning.batch_prefills_per_pod
        held_back = 0 < limit <= pod.batch_prefilling and pod.role is not Role.BATCH
        pod.batch_prefilling -= 1
        # Only a pod that batch work skipped for its prefills can take more now.
        return self._fill() if held_back and self.batch else []

    def requeue(self, ticket: Ticket) -> list[Action]:
        """A batch request cut off mid-stream (a lost pod): back to its place in the queue."""
        self._release(ticket)
        ticket.cut_offs += 1
        self.batch.put_back(ticket)
        return self._fill()

    def abandon(self, ticket: Ticket) -> list[Action]:
        """The client went away: forget the request wherever it is."""
        self.waiting = deque(w for w in self.waiting if w[0] is not ticket)
        if not ticket.interactive and ticket.pod is None:
            self.batch.remove({ticket.request_id})
        self._release(ticket)
        return self._fill()

    def abandon_many(self, tickets: Iterable[Ticket]) -> list[Action]:
        """Forget many batch requests at once (a cancelled or expired batch): one pass over the
        queue rather than one per request."""
        queued: set[str] = set()
        for ticket in tickets:
            if ticket.pod is None:
                queued.add(ticket.request_id)
            else:
                self._release(ticket)
        if queued:
            self.batch.remove(queued)
        return self._fill()

    def expire(self, now_s: float) -> list[Action]:
        """Refuse the interactive requests that waited longer than `max_queue_wait_s`."""
        limit_s = self.tuning.max_queue_wait_s
        refused: list[Action] = []
        while self.waiting and now_s - self.waiting[0][1] >= limit_s:
            ticket, since_s = self.waiting.popleft()
            refused.append(self._refuse(ticket, RouteReason.QUEUE_TIMEOUT, now_s - since_s))
        return refused

    # Reads ------------------------------------------------------------------------------------

    def ready_pods(self, *roles: Role) -> Iterator[PodSlots]:
        return (p for p in self.pods.values() if p.ready and (not roles or p.role in roles))

    def oldest_wait_s(self, now_s: float) -> float:
        """How long the head of the interactive queue has waited (0 when none waits)."""
        return now_s - self.waiting[0][1] if self.waiting else 0.0

    # Placement --------------------------------------------------------------------------------

    def _place_interactive(self, ticket: Ticket, avoid: str | None) -> list[Action]:
        own = _least_loaded(self._by_role[Role.INTERACTIVE], avoid, 0)
        if own is not None:
            return [self._send(ticket, own, RouteReason.TO_INTERACTIVE)]
        mixed = self._by_role[Role.MIXED]
        spare = _least_interactive(mixed, avoid, free=True)
        if spare is not None:
            return [self._send(ticket, spare, RouteReason.OVERFLOW_TO_MIXED)]
        if not self.tuning.preempt_batch:
            return []
        # Batch work an interactive pod lent slots to is a guest there: it goes first.
        lender = _least_interactive(self._by_role[Role.INTERACTIVE], avoid, free=False)
        full = lender or _least_interactive(mixed, avoid, free=False)
        if full is None:
            return []
        victim = full.newest_preemptible_batch()
        assert victim is not None  # _least_interactive(free=False) checked it
        self._release(victim)
        victim.cut_offs += 1
        self.batch.put_back(victim)
        reason = RouteReason.PREEMPTED_LENT_BATCH if lender else RouteReason.PREEMPTED_BATCH
        return [CutOff(victim, full.name, RouteReason.CUT_OFF), self._send(ticket, full, reason)]

    def _fill(self) -> list[Action]:
        """Give free slots to waiting interactive requests first, then to batch work."""
        actions: list[Action] = []
        while self.waiting:
            placed = self._place_interactive(self.waiting[0][0], avoid=None)
            if not placed:
                break
            self.waiting.popleft()
            actions.extend(placed)
        # Batch pods serve no interactive work; mixed slots go to batch work only while no
        # interactive request waits (none is free then anyway, and none must be taken).
        mixed_allowed = not self.waiting
        while len(self.batch):
            pod = self._batch_slot(mixed_allowed=mixed_allowed)
            if pod is None:
                break
            ticket = self.batch.pop()
            actions.append(self._send(ticket, pod, _BATCH_REASONS[pod.role]))
        return actions

    def _batch_slot(self, *, mixed_allowed: bool) -> PodSlots | None:
        """Batch pods first, then spare mixed slots, then spare interactive slots (lent); on
        mixed and interactive pods only while their batch prefills are under the limit."""
        own = _least_loaded(self._by_role[Role.BATCH], None, 0)
        if own is not None or not mixed_allowed:
            return own
        tuning = self.tuning
        prefills = tuning.batch_prefills_per_pod
        spare = _least_loaded(self._by_role[Role.MIXED], None, tuning.mixed_reserve_slots, prefills)
        # Without cut-offs lent work could not give a slot back to an interactive request.
        if spare is not None or not (tuning.batch_on_interactive and tuning.preempt_batch):
            return spare
        return _least_loaded(
            self._by_role[Role.INTERACTIVE], None, tuning.interactive_reserve_slots, prefills
        )

    def _send(self, ticket: Ticket, pod: PodSlots, reason: RouteReason) -> Send:
        ticket.pod = pod.name
        ticket.started = False
        if ticket.interactive:
            pod.interactive.add(ticket)
        else:
            pod.batch.append(ticket)
            pod.batch_prefilling += 1
        pod.in_flight += 1
        return Send(ticket, pod.name, reason)

    def _release(self, ticket: Ticket) -> None:
        pod = self.pods.get(ticket.pod) if ticket.pod is not None else None
        started, ticket.pod, ticket.started = ticket.started, None, False
        if pod is None:
            return
        if ticket.interactive:
            if ticket in pod.interactive:
                pod.interactive.discard(ticket)
                pod.in_flight -= 1
        elif ticket in pod.batch:
            pod.batch.remove(ticket)
            pod.in_flight -= 1
            if not started:
                pod.batch_prefilling -= 1

    def _wait_or_refuse(self, ticket: Ticket, now_s: float) -> Action:
        if len(self.waiting) >= self.tuning.max_queued_interactive:
            return self._refuse(ticket, RouteReason.QUEUE_FULL, 0.0)
        self.waiting.append((ticket, now_s))
        return Wait(ticket, RouteReason.QUEUED, len(self.waiting))

    def _refuse(self, ticket: Ticket, reason: RouteReason, waited_s: float) -> Refuse:
        serving = any(p.role is not Role.BATCH for p in self.ready_pods())
        retry_after_s = max(1.0, min(self.tuning.max_queue_wait_s, 5.0))
        if not serving:
            message = "no interactive or mixed pod of the pool is ready"
            return Refuse(ticket, 503, RouteReason.NO_READY_POD, message, retry_after_s)
        if reason is RouteReason.QUEUE_TIMEOUT:
            message = f"no slot freed within {waited_s:.1f} s (every pod is at its batch size)"
        else:
            limit = self.tuning.max_queued_interactive
            message = f"every pod is at its batch size and {limit} requests already wait"
        return Refuse(ticket, 429, reason, message, retry_after_s)


def _least_loaded(
    pods: list[PodSlots], avoid: str | None, reserve: int, max_prefilling: int = 0
) -> PodSlots | None:
    """The ready pod with more than `reserve` free slots (and, with `max_prefilling`, fewer
    batch requests awaiting their first token) and the fewest requests in flight; the first one
    in order among equals (deterministic)."""
    if max_prefilling:
        pods = [pod for pod in pods if pod.batch_prefilling < max_prefilling]
    best: PodSlots | None = None
    best_load = 0
    for pod in pods:
        load = pod.in_flight
        fits = pod.ready and load + reserve < pod.cap_seqs and pod.name != avoid
        if fits and (best is None or load < best_load):
            best, best_load = pod, load
    return best


def _least_interactive(pods: list[PodSlots], avoid: str | None, *, free: bool) -> PodSlots | None:
    """The ready pod with the least interactive load (then the least load): among those with a
    free slot (`free`), or among the full ones where cutting off a batch request frees a slot
    under the cap."""
    best: PodSlots | None = None
    best_key = (0, 0)
    for pod in pods:
        if not pod.ready or pod.name == avoid:
            continue
        if free:
            if pod.in_flight >= pod.cap_seqs:
                continue
        elif not _can_cut(pod):
            continue
        key = (len(pod.interactive), pod.in_flight)
        if best is None or key < best_key:
            best, best_key = pod, key
    return best


def _can_cut(pod: PodSlots) -> bool:
    """A full pod where cutting off one batch request frees a slot under its cap."""
    return (
        pod.cap_seqs > 0 and pod.in_flight <= pod.cap_seqs and bool(pod.newest_preemptible_batch())
    )
