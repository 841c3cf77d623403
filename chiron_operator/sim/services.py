"""Chiron's pool without its gateway: plain Kubernetes Services in front of the pods.

The operator keeps two Services per pool: `<pool>-interactive` selects the interactive and mixed
pods, `<pool>-batch` the batch and mixed pods. A Service spreads connections over its ready
endpoints at random (kube-proxy), knowing nothing of classes, caps or deadlines, so:

- each request goes to a uniformly random ready pod of its class's Service and queues inside
  that vLLM (its waiting queue: FCFS on interactive and batch pods, by priority on mixed pods,
  where batch requests carry the batch priority);
- there is no pool-level queue and no cap but `--max-num-seqs`, and nothing cuts batch work off
  (vLLM 0.32 does not preempt at the cap by itself); a request whose Service has no ready
  endpoint fails (`NO_ENDPOINT`);
- the local controller's batch size applies only through --max-num-seqs, i.e. restarts (no
  gateway fast path: `PoolTuning.fast_path` is false, as `spec.gateway.enabled: false` makes
  it), and the operator sees no batch queue (the pool has neither a gateway nor a
  `spec.batchQueue`: known and empty), only the pods' own gauges;
- a draining pod's waiting requests, and those still running when it is gone, are sent again
  the same way (a client retrying through the Service), keeping their streamed tokens.

The random choices come from a Generator of their own, spawned from the run's seed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from chiron_operator.core.enums import Role
from chiron_operator.sim.instance import Instance
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.router import PodActions, PodQueuingRouter

NO_ENDPOINT = "no_ready_endpoint"
"""Drop reason: the request's Service had no ready pod (the connection is refused)."""


class ServicesRouter(PodQueuingRouter):
    """The SERVICES routing mode: a random ready endpoint of the class's Service."""

    __slots__ = ("_actions", "_batch", "_dispatch", "_interactive", "_mixed", "_random")

    pool_queued = 0

    def __init__(
        self, ready: Mapping[Role, list[Instance]], actions: PodActions, rng: np.random.Generator
    ) -> None:
        # The cluster updates these lists in place, in the order pods became ready.
        self._interactive = ready[Role.INTERACTIVE]
        self._mixed = ready[Role.MIXED]
        self._batch = ready[Role.BATCH]
        self._actions = actions
        self._dispatch = actions.dispatch
        self._random = rng.random

    def submit(self, request: LiveRequest, now: float) -> None:
        own = self._interactive if request.is_interactive else self._batch
        mixed = self._mixed
        owned = len(own)
        endpoints = owned + len(mixed)
        if not endpoints:
            self._actions.refuse(request, NO_ENDPOINT)
            return
        k = int(self._random() * endpoints)
        self._dispatch(request, own[k] if k < owned else mixed[k - owned], now)

    def on_ready(self, pod: Instance, now: float) -> None:
        """Nothing waits at the pool level for it."""

    def queued(self) -> list[LiveRequest]:
        return []
