"""Where each request goes: the pool's gateway, plain Services, or a uniform join-shortest-queue.

Three routing modes, each a router the cluster feeds the same events (arrivals, completions,
pods turning ready, draining and gone, the policy's target batch sizes) and that acts through
the cluster's `PodActions` (send to a pod, cut a request off, refuse it, wake me later):

- CHIRON (`dispatcher.GatewayRouter`): the product's gateway. Every decision is made by
  `chiron_operator.routing.PoolRouter`, the very module `chiron-gateway` runs: class order,
  overflow to mixed, cutting off batch work, the bounded interactive queue, refusals, the
  deadline-ordered batch queue, caps of min(--max-num-seqs, the role's target).
- SERVICES (`services.ServicesRouter`): the same pool without the gateway, as plain Kubernetes
  Services spread requests: a random ready pod of the class's Service, queueing inside vLLM.
- UNIFORM (`UniformRouter`, below: the baselines' single pool): every request goes to the
  least-loaded ready pod of any role, pods schedule first-come first-served, and a request no
  ready pod may take waits in a pool-level FIFO until one becomes ready (its TTFT still counts
  from arrival).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Protocol

from chiron_operator.core.enums import Role
from chiron_operator.sim.instance import Instance
from chiron_operator.sim.live import LiveRequest

_NO_SIGNALS = (math.nan, math.nan)

Dispatch = Callable[[LiveRequest, Instance, float], None]
"""Hand a request to a pod at a time (the cluster enqueues it and schedules the pod)."""


class RoutingMode(StrEnum):
    """How requests reach pods."""

    CHIRON = "chiron"
    SERVICES = "services"
    UNIFORM = "uniform"


class PodActions(Protocol):
    """What a router may do to requests and pods (the cluster carries it out)."""

    def dispatch(self, request: LiveRequest, pod: Instance, now: float) -> None:
        """Send `request` to `pod` now."""

    def cut_off(self, request: LiveRequest, pod: Instance, now: float) -> None:
        """Close `request`'s stream on `pod` (vLLM aborts it); the router queued it again."""

    def refuse(self, request: LiveRequest, reason: str) -> None:
        """`request` fails for `reason` (a miss)."""

    def wake_at(self, time_s: float) -> None:
        """Call the router's `on_timer` at `time_s`."""


class Router(Protocol):
    """What the cluster tells a router, and what the observer and the records read back."""

    def submit(self, request: LiveRequest, now: float) -> None:
        """A new request arrived."""

    def on_ready(self, pod: Instance, now: float) -> None:
        """`pod` became ready (it is in the cluster's ready lists)."""

    def on_completed(self, pod: Instance, done: list[LiveRequest], now: float) -> None:
        """Requests completed on `pod` (called only when `tracks_completions`)."""

    def on_first_tokens(self, pod: Instance, started: list[LiveRequest], now: float) -> None:
        """Batch requests on `pod` get their first token from the head it just planned (called
        only when `tracks_first_tokens`, for mixed and interactive pods)."""

    def on_draining(self, pod: Instance, waiting: list[LiveRequest], now: float) -> None:
        """`pod` left the Services; `waiting` were queued inside it and must go elsewhere."""

    def on_gone(self, pod: Instance, aborted: list[LiveRequest], now: float) -> None:
        """`pod` terminated; `aborted` still ran on it and must go elsewhere."""

    def set_targets(self, targets: Mapping[Role, int], now: float) -> None:
        """The policy's target batch size per role (the gateway's fast path)."""

    def on_timer(self, now: float) -> None:
        """A time asked for with `PodActions.wake_at` has come."""

    def queued_by_deadline(self) -> Mapping[float, int]:
        """The pool-level batch queue per deadline group (what the gateway exports)."""

    def pod_signals(self, pod: Instance) -> tuple[float, float]:
        """What the gateway exports of `pod`: (interactive requests in flight, its cap); NaN
        for a router that exports nothing."""

    @property
    def tracks_completions(self) -> bool: ...

    @property
    def tracks_first_tokens(self) -> bool: ...

    @property
    def pool_queued(self) -> int:
        """Interactive requests (any, for UNIFORM) waiting at the pool level."""

    @property
    def batch_queued(self) -> int:
        """Batch requests in the pool-level batch queue."""

    def queued(self) -> list[LiveRequest]:
        """Every request the router holds (for the end-of-run accounting)."""


def _least_loaded(pods: list[Instance]) -> Instance | None:
    best: Instance | None = None
    best_load = 0
    for pod in pods:
        load = pod.n_running + pod.n_waiting
        if best is None or load < best_load:
            best, best_load = pod, load
    return best


class PodQueuingRouter(ABC):
    """What the routers without a gateway share: pods queue their own requests, so nothing
    waits for a slot, no timer is asked for, no pool-level batch queue exists, no gateway caps
    pods (no fast path), and a pod's waiting or aborted requests are routed again as arrivals."""

    __slots__ = ()

    tracks_completions = False
    tracks_first_tokens = False
    batch_queued = 0

    @abstractmethod
    def submit(self, request: LiveRequest, now: float) -> None: ...

    def on_completed(self, pod: Instance, done: list[LiveRequest], now: float) -> None:
        """Nothing waits for a slot: pods queue their own requests."""
        return None

    def on_first_tokens(self, pod: Instance, started: list[LiveRequest], now: float) -> None:
        """Nothing paces batch prefills."""
        return None

    def on_draining(self, pod: Instance, waiting: list[LiveRequest], now: float) -> None:
        for request in waiting:
            self.submit(request, now)

    def on_gone(self, pod: Instance, aborted: list[LiveRequest], now: float) -> None:
        for request in aborted:
            self.submit(request, now)

    def set_targets(self, targets: Mapping[Role, int], now: float) -> None:
        """No fast path: batch sizes change only with --max-num-seqs."""
        return None

    def on_timer(self, now: float) -> None:
        """Never asks for one."""
        return None

    def queued_by_deadline(self) -> Mapping[float, int]:
        return {}

    def pod_signals(self, pod: Instance) -> tuple[float, float]:
        return _NO_SIGNALS


class UniformRouter(PodQueuingRouter):
    """The baselines' join-shortest-queue over every ready pod, with a pool-level FIFO for the
    time no pod is ready."""

    __slots__ = ("_dispatch", "_ready", "pool_queue")

    def __init__(self, ready: Mapping[Role, list[Instance]], actions: PodActions) -> None:
        # The cluster updates these lists in place.
        self._ready = ready
        self._dispatch = actions.dispatch
        self.pool_queue: deque[LiveRequest] = deque()

    @property
    def pool_queued(self) -> int:
        return len(self.pool_queue)

    def submit(self, request: LiveRequest, now: float) -> None:
        target = self._choose()
        if target is None:
            self.pool_queue.append(request)
        else:
            self._dispatch(request, target, now)

    def _choose(self) -> Instance | None:
        best: Instance | None = None
        for pods in self._ready.values():
            pod = _least_loaded(pods)
            if pod is not None and (best is None or pod.load < best.load):
                best = pod
        return best

    def on_ready(self, pod: Instance, now: float) -> None:
        queue = self.pool_queue
        while queue:
            target = self._choose()
            if target is None:
                break
            self._dispatch(queue.popleft(), target, now)

    def queued(self) -> list[LiveRequest]:
        return list(self.pool_queue)
