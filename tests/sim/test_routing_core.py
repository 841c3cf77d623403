"""One routing core: the simulator's gateway and `chiron-gateway` decide with the same code and
translate the same events into the same calls of it.

The table is a recorded sequence of what a gateway sees (pods turning ready, draining and gone,
target batch sizes, arrivals, completions, the queue's expiry check), each row with the
decisions it must produce. It is played through the gateway's `Dispatcher` and through the
simulator's `GatewayRouter`: both must produce exactly those decisions, row by row.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.gateway.config import PodInfo
from chiron_operator.gateway.dispatcher import Dispatcher, Pending
from chiron_operator.gateway.metrics import GatewayMetrics
from chiron_operator.perfmodel.profiles import profile
from chiron_operator.routing import (
    Action,
    CutOff,
    PoolRouter,
    Refuse,
    RoutingTuning,
    Send,
    Ticket,
)
from chiron_operator.sim.cluster import Cluster
from chiron_operator.sim.dispatcher import REFUSED, GatewayRouter
from chiron_operator.sim.events import EventQueue
from chiron_operator.sim.instance import Instance
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.router import RoutingMode
from tests.sim.simkit import spec

INT, MIX, BAT = Role.INTERACTIVE, Role.MIXED, Role.BATCH
INTERACTIVE, BATCH = RequestClass.INTERACTIVE, RequestClass.BATCH
TUNING = RoutingTuning(max_queued_interactive=2, max_queue_wait_s=10.0)
POD_ROLES = {"interactive-0": INT, "mixed-1": MIX, "batch-2": BAT, "mixed-3": MIX}
CLASSES = {n: INTERACTIVE for n in range(1, 7)} | {n: BATCH for n in range(11, 16)}
DEADLINES = {11: 100.0, 12: 100.0, 13: 50.0, 14: 30.0}

Decision = tuple[str, int, str]
"""("send", request, pod), ("cut", request, pod) or ("refuse", request, reason)."""
Row = tuple[float, str, Any, list[Decision]]
"""(time, event, its argument, the decisions it must produce)."""

TABLE: list[Row] = [
    (0.0, "ready", ("interactive-0", 2), []),
    (0.0, "ready", ("mixed-1", 2), []),
    (0.0, "ready", ("batch-2", 1), []),
    (1.0, "arrive", 1, [("send", 1, "interactive-0")]),
    (1.0, "arrive", 2, [("send", 2, "interactive-0")]),
    (2.0, "arrive", 11, [("send", 11, "batch-2")]),
    (2.0, "arrive", 12, [("send", 12, "mixed-1")]),  # batch pods full: a spare mixed slot
    (2.0, "arrive", 13, [("send", 13, "mixed-1")]),
    # Every slot taken: the newest batch request on the mixed pod is cut off, twice.
    (3.0, "arrive", 3, [("cut", 13, "mixed-1"), ("send", 3, "mixed-1")]),
    (3.0, "arrive", 4, [("cut", 12, "mixed-1"), ("send", 4, "mixed-1")]),
    (3.0, "arrive", 5, []),  # nothing left to cut: it waits at the gateway
    (4.0, "targets", {INT: 1}, []),  # the fast path: interactive pods capped at 1
    (5.0, "complete", (1, "interactive-0"), []),  # 1 in flight, cap 1: still no slot
    (6.0, "targets", {INT: 2}, [("send", 5, "interactive-0")]),
    # The earliest deadline first: 13 (50 s) before 12 (100 s).
    (7.0, "complete", (11, "batch-2"), [("send", 13, "batch-2")]),
    (8.0, "drain", ("mixed-1", [4]), []),  # 4 waited inside it: retried, no slot, waits
    (9.0, "gone", ("mixed-1", [3]), []),  # 3 still ran on it: retried, waits too
    (10.0, "arrive", 6, [("refuse", 6, f"{REFUSED}:QueueFull")]),
    (11.0, "complete", (2, "interactive-0"), [("send", 4, "interactive-0")]),
    (18.0, "expire", None, []),  # 3 has waited 9 s of its 10
    (19.0, "expire", None, [("refuse", 3, f"{REFUSED}:QueueWaitExceeded")]),
    (21.0, "arrive", 14, []),  # no batch slot anywhere
    (22.0, "ready", ("mixed-3", 4), [("send", 14, "mixed-3"), ("send", 12, "mixed-3")]),
    # mixed-3 has room, but already two batch requests before their first token.
    (23.0, "arrive", 15, []),
    (24.0, "first", (14, "mixed-3"), [("send", 15, "mixed-3")]),
    (25.0, "first", (14, "mixed-3"), []),  # told twice: nothing more
]


def decision(action: Action) -> Decision | None:
    rid = int(action.ticket.request_id)
    if isinstance(action, Send):
        return ("send", rid, action.pod)
    if isinstance(action, CutOff):
        return ("cut", rid, action.pod)
    if isinstance(action, Refuse):
        return ("refuse", rid, f"{REFUSED}:{action.reason.value}")
    return None  # Wait: no decision to carry out


class GatewayPlayer:
    """Plays the table through `chiron-gateway`'s Dispatcher, as its handlers call it."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.dispatcher = Dispatcher(TUNING, GatewayMetrics(), clock=lambda: self.now_s)
        self.pending: dict[int, Pending] = {}
        self.seen: list[Decision] = []
        execute = self.dispatcher._execute

        def recording(actions: list[Action]) -> None:
            self.seen += [d for d in map(decision, actions) if d is not None]
            execute(actions)

        self.dispatcher._execute = recording  # type: ignore[method-assign]

    def play(self, at_s: float, event: str, arg: Any) -> None:
        self.now_s = at_s
        d = self.dispatcher
        if event == "ready":
            name, max_num_seqs = arg
            d.upsert_pod(PodInfo(name, POD_ROLES[name], "", max_num_seqs, True))
        elif event == "drain":
            name, handed = arg
            d.upsert_pod(PodInfo(name, POD_ROLES[name], "", d.pods[name].max_num_seqs, False))
            self._again(handed)
        elif event == "gone":
            name, aborted = arg
            d.remove_pod(name)
            self._again(aborted)  # their connections fail: retried, or put back
        elif event == "targets":
            d.set_targets(arg)
        elif event == "arrive":
            deadline = DEADLINES.get(arg, math.inf)
            ticket = Ticket(str(arg), CLASSES[arg], at_s, deadline, group=str(arg))
            self.pending[arg] = d.open(ticket)
        elif event == "complete":
            d.finish(self.pending[arg[0]])
        elif event == "first":  # a streamed batch answer's first chunk with output
            d.started(self.pending[arg[0]])
        else:  # what `expire_forever` runs every period
            d._execute(d.router.expire(d.clock()))

    def _again(self, requests: Sequence[int]) -> None:
        for rid in requests:
            if CLASSES[rid] is INTERACTIVE:
                self.dispatcher.retry(self.pending[rid])
            else:
                self.dispatcher.requeue(self.pending[rid])


@dataclass
class Recorder:
    """The simulator's side of `router.PodActions`: records what the gateway router asks."""

    seen: list[Decision] = field(default_factory=list)

    def dispatch(self, request: LiveRequest, pod: Instance, now: float) -> None:
        self.seen.append(("send", request.request_id, pod.name))

    def cut_off(self, request: LiveRequest, pod: Instance, now: float) -> None:
        self.seen.append(("cut", request.request_id, pod.name))

    def refuse(self, request: LiveRequest, reason: str) -> None:
        self.seen.append(("refuse", request.request_id, reason))

    def wake_at(self, time_s: float) -> None:
        """The table says when the expiry check runs."""


class SimPlayer:
    """Plays the table through the simulator's gateway, as the cluster calls it."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.router = GatewayRouter(TUNING, self.recorder, deadline_bucket_s=60.0)
        self.pods: dict[str, Instance] = {}
        self.requests = {
            rid: LiveRequest(spec(rid, 0.0, 10, 10, cls, DEADLINES.get(rid)), 3600.0)
            for rid, cls in CLASSES.items()
        }
        self.seen = self.recorder.seen

    def play(self, at_s: float, event: str, arg: Any) -> None:
        r = self.router
        if event == "ready":
            name, max_num_seqs = arg
            index = int(name.rsplit("-", 1)[1])
            pod = Instance(
                index, POD_ROLES[name], max_num_seqs, profile("llama31-8b-a100"), created_s=0.0
            )
            self.pods[name] = pod
            r.on_ready(pod, at_s)
        elif event == "drain":
            name, handed = arg
            r.on_draining(self.pods[name], [self.requests[i] for i in handed], at_s)
        elif event == "gone":
            name, aborted = arg
            r.on_gone(self.pods[name], [self.requests[i] for i in aborted], at_s)
        elif event == "targets":
            r.set_targets(arg, at_s)
        elif event == "arrive":
            self.requests[arg].arrival_s = at_s
            r.submit(self.requests[arg], at_s)
        elif event == "complete":
            rid, name = arg
            r.on_completed(self.pods[name], [self.requests[rid]], at_s)
        elif event == "first":
            rid, name = arg
            r.on_first_tokens(self.pods[name], [self.requests[rid]], at_s)
        else:
            r.on_timer(at_s)


@pytest.mark.parametrize("player", [GatewayPlayer, SimPlayer], ids=["gateway", "simulator"])
def test_the_table_decides_the_same_in_the_gateway_and_the_simulator(
    player: Callable[[], GatewayPlayer | SimPlayer],
) -> None:
    played = player()
    for at_s, event, arg, expected in TABLE:
        before = len(played.seen)
        played.play(at_s, event, arg)
        assert played.seen[before:] == expected, (at_s, event, arg)


def test_both_players_see_the_whole_table() -> None:
    gateway, simulator = GatewayPlayer(), SimPlayer()
    for at_s, event, arg, _ in TABLE:
        gateway.play(at_s, event, arg)
        simulator.play(at_s, event, arg)
    assert gateway.seen == simulator.seen
    assert {d[0] for d in gateway.seen} == {"send", "cut", "refuse"}


def test_the_simulator_routes_with_the_gateways_routing_core() -> None:
    cluster = Cluster(
        EventQueue(),
        profile("llama31-8b-a100"),
        routing=RoutingMode.CHIRON,
        cold_start_s=lambda _rng: 1.0,
        rng=np.random.default_rng(0),
    )
    simulated = cluster.router
    assert isinstance(simulated, GatewayRouter)
    shipped = Dispatcher(RoutingTuning(), GatewayMetrics()).router
    assert type(simulated.core) is type(shipped) is PoolRouter


SIM = Path(__file__).parents[2] / "chiron_operator" / "sim"


def _routing_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("chiron_operator.routing")
        for alias in node.names
    }


def test_only_the_gateway_adapter_drives_the_routing_core() -> None:
    # The chiron mode's decisions come from `PoolRouter` alone: the simulator's engine holds
    # no routing logic of its own for it, only the adapter that feeds it events.
    drivers = {p.name for p in SIM.glob("*.py") if "PoolRouter" in _routing_imports(p)}
    assert drivers == {"dispatcher.py"}
    routers: Mapping[str, set[str]] = {p.name: _routing_imports(p) for p in SIM.glob("*.py")}
    assert routers["router.py"] == set() and routers["services.py"] == set()
