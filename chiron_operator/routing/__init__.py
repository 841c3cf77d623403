"""The pool's request path as pure logic: routing, admission and the global batch queue.

- `router.PoolRouter`: which pod gets a request and when (class order, overflow to mixed,
  cutting off batch work on a full mixed pod, the bounded interactive queue, refusals), as a
  deterministic state machine whose every call returns `Action`s with a `RouteReason`.
- `batch_queue.BatchQueue`: request groups, earliest deadline first, arrival order within one.
- `model`: tickets, pod slots, actions, the tunables, and `pod_cap_seqs` (a pod's cap: the
  smaller of `--max-num-seqs` and its role's target batch size, shared among gateway replicas).

No I/O, no clock, no randomness: the gateway (`chiron_operator.gateway`) drives it over HTTP,
and the simulator can drive the very same code over simulated time.
"""

from chiron_operator.routing.batch_queue import BatchQueue
from chiron_operator.routing.model import (
    BATCH_PRIORITY,
    DEADLINE_BUCKET_S,
    INTERACTIVE_PRIORITY,
    Action,
    CutOff,
    PodSlots,
    Refuse,
    RouteReason,
    RoutingTuning,
    Send,
    Ticket,
    Wait,
    pod_cap_seqs,
)
from chiron_operator.routing.router import PoolRouter

__all__ = [
    "BATCH_PRIORITY",
    "DEADLINE_BUCKET_S",
    "INTERACTIVE_PRIORITY",
    "Action",
    "BatchQueue",
    "CutOff",
    "PodSlots",
    "PoolRouter",
    "Refuse",
    "RouteReason",
    "RoutingTuning",
    "Send",
    "Ticket",
    "Wait",
    "pod_cap_seqs",
]
