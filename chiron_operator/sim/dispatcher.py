"""The pool's gateway over simulated time: the product's routing core, fed by the cluster.

`chiron_operator.routing.PoolRouter` decides everything, exactly as in `chiron-gateway`; this
module only translates, like `gateway/dispatcher.py` does over HTTP:

- events in: an arrival opens a `Ticket` (`submit`); a completion frees its slot (`finish`); a
  pod turning ready, or the target batch sizes changing, sets its cap (`set_pod` with
  `pod_cap_seqs(--max-num-seqs, the role's target, 1 replica, 0)`, the local controller's fast
  path, applied when the policy decides, as the gateway applies the pool's status); a draining
  pod takes nothing new (`set_pod(ready=False)`) and the requests it gives back, and those
  still running when it is gone (`remove_pod`), are routed again as the gateway does: an
  interactive one retried on another pod (`retry`), a batch one put back in its place in the
  queue (`requeue`);
- actions out: `Send` hands the request to the pod; `CutOff` aborts a batch request on its pod
  (its tokens are lost: the gateway resends it from scratch, and the router has queued it again
  in its place); `Refuse` fails the request with the reason (a miss); `Wait` keeps it in the
  router's interactive queue, whose `expire` runs when its head's `max_queue_wait_s` is up.

A batch request's group is its own id (the workloads name no Batch API batch, and a backlog of
one deadline sorts the same either way: by deadline, then by arrival). Batch requests are not
streamed to clients, so they stay preemptible, as Batch API work does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from chiron_operator.core.enums import Role
from chiron_operator.routing import (
    Action,
    CutOff,
    PoolRouter,
    Refuse,
    RoutingTuning,
    Send,
    Ticket,
    pod_cap_seqs,
)
from chiron_operator.sim.instance import Instance
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.router import PodActions

REFUSED = "refused"
"""Drop reason prefix of a request the gateway refused: `refused:<RouteReason>`."""


class GatewayRouter:
    """The CHIRON routing mode: `core` is the gateway's `PoolRouter`, this its driver."""

    __slots__ = ("_actions", "_pods", "_request_of", "_targets", "_ticket_of", "_timer_s", "core")

    tracks_completions = True
    tracks_first_tokens = True

    def __init__(
        self, tuning: RoutingTuning, actions: PodActions, *, deadline_bucket_s: float
    ) -> None:
        self.core = PoolRouter(tuning, deadline_bucket_s=deadline_bucket_s)
        self._actions = actions
        self._pods: dict[str, Instance] = {}
        self._request_of: dict[Ticket, LiveRequest] = {}
        self._ticket_of: dict[LiveRequest, Ticket] = {}
        self._targets: dict[Role, int] = {}
        self._timer_s = math.inf  # when the queue's expiry check is due (inf: none asked for)

    # -- events in ----------------------------------------------------------------------------

    def submit(self, request: LiveRequest, now: float) -> None:
        """An arrival, as the gateway's handler opens it."""
        name = str(request.request_id)
        ticket = Ticket(name, request.request_class, now, request.deadline_s, group=name)
        self._request_of[ticket] = request
        self._ticket_of[request] = ticket
        self._execute(self.core.submit(ticket, now), now)

    def on_completed(self, pod: Instance, done: list[LiveRequest], now: float) -> None:
        # One boundary ends these together: freeing them one at a time would let the first
        # refill cut off another that has already finished.
        tickets = [self._ticket_of.pop(request) for request in done]
        for ticket in tickets:
            del self._request_of[ticket]
        self._execute(self.core.finish_many(tickets), now)

    def on_first_tokens(self, pod: Instance, started: list[LiveRequest], now: float) -> None:
        # As the gateway sees a streamed batch request's first chunk.
        ticket_of, core = self._ticket_of, self.core
        for request in started:
            ticket = ticket_of.get(request)
            if ticket is not None:
                actions = core.started(ticket)
                if actions:
                    self._execute(actions, now)

    def on_ready(self, pod: Instance, now: float) -> None:
        self._pods[pod.name] = pod
        self._set(pod, ready=True, now=now)

    def on_draining(self, pod: Instance, waiting: list[LiveRequest], now: float) -> None:
        self._set(pod, ready=False, now=now)
        for request in waiting:
            self._route_again(request, now)

    def on_gone(self, pod: Instance, aborted: list[LiveRequest], now: float) -> None:
        # The core's orphans are the same requests; `aborted` has the pod's own (deterministic)
        # order, where the core's would follow a set's.
        self.core.remove_pod(pod.name)
        self._pods.pop(pod.name, None)
        for request in aborted:
            self._route_again(request, now)

    def set_targets(self, targets: Mapping[Role, int], now: float) -> None:
        if dict(targets) == self._targets:
            return
        self._targets = dict(targets)
        for pod in list(self._pods.values()):
            self._set(pod, ready=self.core.pods[pod.name].ready, now=now)

    def on_timer(self, now: float) -> None:
        self._timer_s = math.inf
        self._execute(self.core.expire(now), now)
        self._arm(now)

    # -- reads --------------------------------------------------------------------------------

    def queued_by_deadline(self) -> Mapping[float, int]:
        return self.core.batch.queued_by_deadline()

    def pod_signals(self, pod: Instance) -> tuple[float, float]:
        slots = self.core.pods.get(pod.name)
        if slots is None:
            return math.nan, math.nan
        return float(len(slots.interactive)), float(slots.cap_seqs)

    @property
    def pool_queued(self) -> int:
        return len(self.core.waiting)

    @property
    def batch_queued(self) -> int:
        return len(self.core.batch)

    def queued(self) -> list[LiveRequest]:
        return [request for ticket, request in self._request_of.items() if ticket.pod is None]

    # -- translation --------------------------------------------------------------------------

    def cap_of(self, pod: Instance) -> int:
        """The gateway's cap of `pod`: min(--max-num-seqs, its role's target), one replica."""
        return pod_cap_seqs(pod.max_num_seqs, self._targets.get(pod.role), 1, 0)

    def _set(self, pod: Instance, *, ready: bool, now: float) -> None:
        self._execute(self.core.set_pod(pod.name, pod.role, self.cap_of(pod), ready=ready), now)

    def _route_again(self, request: LiveRequest, now: float) -> None:
        ticket = self._ticket_of[request]
        if request.is_interactive:
            self._execute(self.core.retry(ticket, now), now)
            return
        request.generated = 0  # the gateway resends batch work from scratch
        self._execute(self.core.requeue(ticket), now)

    def _execute(self, actions: list[Action], now: float) -> None:
        for action in actions:
            request = self._request_of[action.ticket]
            if isinstance(action, Send):
                self._actions.dispatch(request, self._pods[action.pod], now)
            elif isinstance(action, CutOff):
                self._actions.cut_off(request, self._pods[action.pod], now)
            elif isinstance(action, Refuse):
                del self._request_of[action.ticket], self._ticket_of[request]
                self._actions.refuse(request, f"{REFUSED}:{action.reason.value}")
            elif self._timer_s == math.inf:  # Wait: the queue's head decides when to check
                self._arm(now)

    def _arm(self, now: float) -> None:
        """Ask for an expiry check when the queue's head has waited `max_queue_wait_s`."""
        waiting = self.core.waiting
        if not waiting or self._timer_s != math.inf:
            return
        due_s = waiting[0][1] + self.core.tuning.max_queue_wait_s
        # A sum that rounds below the limit must still move time on, or the check would repeat.
        self._timer_s = due_s if due_s > now else math.nextafter(now, math.inf)
        self._actions.wake_at(self._timer_s)
