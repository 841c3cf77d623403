"""The routing core on its own: the order it routes in, and properties no sequence of events
may break (no pod above its cap, interactive never waits beside a free slot, batch never takes
the slot an interactive request waits for, nothing lost)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.routing import (
    Action,
    CutOff,
    PoolRouter,
    Refuse,
    RouteReason,
    RoutingTuning,
    Send,
    Ticket,
    Wait,
    pod_cap_seqs,
)

_ids = itertools.count()


def interactive(now_s: float = 0.0) -> Ticket:
    return Ticket(f"i{next(_ids)}", RequestClass.INTERACTIVE, now_s)


def batch(deadline_s: float = 100.0, group: str = "g", now_s: float = 0.0) -> Ticket:
    return Ticket(f"b{next(_ids)}", RequestClass.BATCH, now_s, deadline_s, group, 10.0)


def pool(*pods: tuple[str, Role, int], **tuning: object) -> PoolRouter:
    router = PoolRouter(RoutingTuning(**tuning))  # type: ignore[arg-type]
    for name, role, cap in pods:
        router.set_pod(name, role, cap, ready=True)
    return router


def sends(actions: list[Action]) -> list[tuple[str, str, RouteReason]]:
    return [(a.ticket.request_id, a.pod, a.reason) for a in actions if isinstance(a, Send)]


def test_interactive_goes_to_the_least_loaded_interactive_pod_first() -> None:
    router = pool(("i1", Role.INTERACTIVE, 2), ("i2", Role.INTERACTIVE, 2), ("m1", Role.MIXED, 2))
    placed = [sends(router.submit(interactive(), 0.0))[0][1:] for _ in range(4)]
    assert placed == [
        ("i1", RouteReason.TO_INTERACTIVE),
        ("i2", RouteReason.TO_INTERACTIVE),
        ("i1", RouteReason.TO_INTERACTIVE),
        ("i2", RouteReason.TO_INTERACTIVE),
    ]
    assert sends(router.submit(interactive(), 0.0))[0][1:] == ("m1", RouteReason.OVERFLOW_TO_MIXED)


def test_overflow_picks_the_mixed_pod_with_least_interactive_load() -> None:
    router = pool(("m1", Role.MIXED, 4), ("m2", Role.MIXED, 4))
    for _ in range(3):
        router.submit(batch(), 0.0)  # m1, m2, m1 by total load
    assert [p.in_flight for p in router.pods.values()] == [2, 1]
    # Equal interactive load: the less loaded pod; then the one with less interactive work.
    first = sends(router.submit(interactive(), 0.0))
    second = sends(router.submit(interactive(), 0.0))
    assert [first[0][1], second[0][1]] == ["m2", "m1"]


def test_a_full_mixed_pod_cuts_off_its_newest_batch_request() -> None:
    router = pool(("m1", Role.MIXED, 2))
    old, new = batch(), batch()
    router.submit(old, 0.0)
    router.submit(new, 0.0)
    arriving = interactive()
    actions = router.submit(arriving, 1.0)
    assert [type(a) for a in actions] == [CutOff, Send]
    cut, sent = actions
    assert isinstance(cut, CutOff) and cut.ticket is new and cut.pod == "m1"
    assert isinstance(sent, Send) and sent.ticket is arriving
    assert sent.reason is RouteReason.PREEMPTED_BATCH
    assert new.cut_offs == 1 and new.pod is None and router.batch.peek() is new
    # When the interactive request ends, the cut-off request goes back first.
    assert sends(router.finish(arriving)) == [(new.request_id, "m1", RouteReason.BATCH_TO_MIXED)]


def test_requests_ending_together_free_every_slot_before_any_refill() -> None:
    # A mixed pod runs an interactive request and two batch ones; its cap drops to 2, so an
    # interactive arrival waits (nothing can be cut off above the cap). The interactive request
    # and the newest batch one end at one instant (one iteration boundary in the simulator).
    # Freed one by one, the first refill would cut off the batch request that has in fact
    # finished too, and queue it to run again; freed together, the waiting request takes a
    # free slot.
    router = pool(("m1", Role.MIXED, 3))
    first, older, newest = interactive(), batch(), batch()
    for ticket in (first, older, newest):
        router.submit(ticket, 0.0)
    router.set_pod("m1", Role.MIXED, 2, ready=True)
    waiting = interactive()
    assert [type(a) for a in router.submit(waiting, 0.0)] == [Wait]
    actions = router.finish_many([first, newest])
    assert sends(actions) == [(waiting.request_id, "m1", RouteReason.OVERFLOW_TO_MIXED)]
    assert [type(a) for a in actions] == [Send]
    assert older.cut_offs == newest.cut_offs == 0 and len(router.batch) == 0


def test_batch_that_already_streamed_to_its_client_is_not_cut_off() -> None:
    router = pool(("m1", Role.MIXED, 1))
    pinned = batch()
    router.submit(pinned, 0.0)
    pinned.preemptible = False
    actions = router.submit(interactive(), 0.0)
    assert [type(a) for a in actions] == [Wait]


def test_batch_fills_batch_pods_before_mixed_and_respects_the_reserve() -> None:
    router = pool(("b1", Role.BATCH, 1), ("m1", Role.MIXED, 3), mixed_reserve_slots=1)
    placed = [sends(router.submit(batch(), 0.0)) for _ in range(4)]
    assert [p[0][1] if p else None for p in placed] == ["b1", "m1", "m1", None]
    assert len(router.batch) == 1


def test_batch_borrows_interactive_slots_last_and_keeps_the_reserve() -> None:
    router = pool(
        ("i1", Role.INTERACTIVE, 3), ("m1", Role.MIXED, 1), ("b1", Role.BATCH, 1),
        interactive_reserve_slots=1,
    )  # fmt: skip
    placed = [sends(router.submit(batch(), 0.0)) for _ in range(5)]
    assert [p[0][1:] if p else None for p in placed] == [
        ("b1", RouteReason.BATCH_TO_BATCH_POD),
        ("m1", RouteReason.BATCH_TO_MIXED),
        ("i1", RouteReason.BATCH_TO_INTERACTIVE),
        ("i1", RouteReason.BATCH_TO_INTERACTIVE),
        None,  # the interactive pod's last slot is its reserve
    ]
    # The reserve is the interactive request's at once.
    assert sends(router.submit(interactive(), 0.0))[0][1:] == ("i1", RouteReason.TO_INTERACTIVE)


def test_an_interactive_request_cuts_off_lent_batch_work_before_a_mixed_pods() -> None:
    router = pool(("i1", Role.INTERACTIVE, 2), ("m1", Role.MIXED, 1), interactive_reserve_slots=0)
    on_mixed, first_lent, newest_lent = batch(), batch(), batch()
    for ticket in (on_mixed, first_lent, newest_lent):
        router.submit(ticket, 0.0)
    assert [on_mixed.pod, first_lent.pod, newest_lent.pod] == ["m1", "i1", "i1"]
    arriving = interactive()
    actions = router.submit(arriving, 1.0)
    assert [type(a) for a in actions] == [CutOff, Send]
    cut, sent = actions
    assert isinstance(cut, CutOff) and cut.ticket is newest_lent and cut.pod == "i1"
    assert isinstance(sent, Send) and sent.pod == "i1"
    assert sent.reason is RouteReason.PREEMPTED_LENT_BATCH
    assert on_mixed.pod == "m1" and router.batch.peek() is newest_lent


@pytest.mark.parametrize(
    "tuning", [{"batch_on_interactive": False}, {"preempt_batch": False}], ids=["off", "no-cuts"]
)
def test_interactive_pods_lend_nothing_when_off_or_without_cut_offs(
    tuning: dict[str, bool],
) -> None:
    router = pool(("i1", Role.INTERACTIVE, 4), interactive_reserve_slots=0, **tuning)
    assert sends(router.submit(batch(), 0.0)) == []
    assert len(router.batch) == 1 and router.pods["i1"].in_flight == 0


def test_batch_queue_is_earliest_deadline_group_first_arrival_within() -> None:
    router = pool()
    late_a, late_b = batch(505.0, "late"), batch(505.0, "late")
    soon_a, soon_b = batch(107.0, "soon"), batch(107.0, "soon")
    for ticket in (late_a, late_b, soon_a, soon_b):
        router.submit(ticket, 0.0)
    # Exported groups: deadlines rounded down to DEADLINE_BUCKET_S (10 s), never later.
    assert router.batch.queued_by_deadline() == {500.0: 2, 100.0: 2}
    actions = router.set_pod("b1", Role.BATCH, 4, ready=True)
    assert [s[0] for s in sends(actions)] == [
        t.request_id for t in (soon_a, soon_b, late_a, late_b)
    ]


def test_queue_bounds_and_refusals_say_why() -> None:
    router = pool(("i1", Role.INTERACTIVE, 1), max_queued_interactive=1, max_queue_wait_s=10.0)
    router.submit(interactive(), 0.0)
    waiting = router.submit(interactive(), 0.0)
    assert [type(a) for a in waiting] == [Wait]
    (refused,) = router.submit(interactive(), 0.0)
    assert isinstance(refused, Refuse) and refused.status == 429
    assert refused.reason is RouteReason.QUEUE_FULL and "1 requests already wait" in refused.message
    assert refused.retry_after_s >= 1.0
    (timed_out,) = router.expire(10.5)
    assert isinstance(timed_out, Refuse) and timed_out.reason is RouteReason.QUEUE_TIMEOUT
    assert "10.5 s" in timed_out.message


def test_no_ready_pod_is_503() -> None:
    router = pool(("b1", Role.BATCH, 4), max_queued_interactive=0)
    (refused,) = router.submit(interactive(), 0.0)
    assert isinstance(refused, Refuse) and (refused.status, refused.reason) == (
        503,
        RouteReason.NO_READY_POD,
    )


def test_a_waiting_request_gets_the_first_freed_slot() -> None:
    router = pool(("i1", Role.INTERACTIVE, 1))
    first, second = interactive(), interactive()
    router.submit(first, 0.0)
    router.submit(second, 0.0)
    assert sends(router.finish(first)) == [(second.request_id, "i1", RouteReason.TO_INTERACTIVE)]


def test_retry_avoids_the_pod_that_failed() -> None:
    router = pool(("i1", Role.INTERACTIVE, 2), ("i2", Role.INTERACTIVE, 2))
    ticket = interactive()
    assert sends(router.submit(ticket, 0.0))[0][1] == "i1"
    assert sends(router.retry(ticket, 0.0))[0][1] == "i2"
    assert ticket.retries == 1


def test_a_not_ready_pod_takes_nothing_new_and_a_lower_cap_drains() -> None:
    router = pool(("i1", Role.INTERACTIVE, 2), ("i2", Role.INTERACTIVE, 2))
    router.set_pod("i1", Role.INTERACTIVE, 2, ready=False)
    assert {sends(router.submit(interactive(), 0.0))[0][1] for _ in range(2)} == {"i2"}
    router.set_pod("i2", Role.INTERACTIVE, 1, ready=True)
    assert [type(a) for a in router.submit(interactive(), 0.0)] == [Wait]


@pytest.mark.parametrize("cap", [0, 1, 2, 7, 64, 255])
@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_replicas_share_a_cap_exactly(cap: int, replicas: int) -> None:
    shares = [pod_cap_seqs(cap, None, replicas, i) for i in range(replicas)]
    assert sum(shares) == cap and max(shares) - min(shares) <= 1
    assert pod_cap_seqs(cap, cap // 2, 1, 0) == cap // 2
    assert pod_cap_seqs(cap, cap + 5, 1, 0) == cap


def test_shared_pods_take_batch_work_only_while_few_batch_prefills_run() -> None:
    """Batch prefills stall the interactive decodes beside them: a mixed or interactive pod
    holds at most `batch_prefills_per_pod` batch requests before their first token."""
    router = pool(("m1", Role.MIXED, 16), ("i1", Role.INTERACTIVE, 16), batch_prefills_per_pod=2)
    tickets = [batch() for _ in range(8)]
    placed = [s for t in tickets for s in sends(router.submit(t, 0.0))]
    # Two on the mixed pod, then two lent on the interactive pod; the rest wait in the queue.
    assert [(pod, reason) for _, pod, reason in placed] == [
        ("m1", RouteReason.BATCH_TO_MIXED),
        ("m1", RouteReason.BATCH_TO_MIXED),
        ("i1", RouteReason.BATCH_TO_INTERACTIVE),
        ("i1", RouteReason.BATCH_TO_INTERACTIVE),
    ]
    assert len(router.batch) == 4
    # The first token of one on m1 lets the next batch request in there.
    assert sends(router.started(tickets[0]))[0][1] == "m1"
    assert router.pods["m1"].batch_prefilling == 2
    assert router.started(tickets[0]) == []  # reported twice: nothing more
    # A cut-off or finished request that never started frees its prefill too.
    assert sends(router.finish(tickets[1]))[0][1] == "m1"
    assert router.pods["m1"].batch_prefilling == 2
    assert router.started(interactive()) == []  # not on any pod: nothing


def test_batch_pods_and_a_zero_limit_pace_nothing() -> None:
    router = pool(("b1", Role.BATCH, 8), batch_prefills_per_pod=1)
    placed = [sends(router.submit(batch(), 0.0)) for _ in range(5)]
    assert all(p[0][1] == "b1" for p in placed)
    unpaced = pool(("m1", Role.MIXED, 8), batch_prefills_per_pod=0)
    placed = [sends(unpaced.submit(batch(), 0.0)) for _ in range(5)]
    assert all(p[0][1] == "m1" for p in placed)


def test_a_resent_batch_request_prefills_again() -> None:
    router = pool(("m1", Role.MIXED, 8), batch_prefills_per_pod=1)
    first, second = batch(), batch()
    router.submit(first, 0.0)
    router.submit(second, 0.0)
    assert second.pod is None  # m1 holds one prefill already
    assert sends(router.started(first)) == [(second.request_id, "m1", RouteReason.BATCH_TO_MIXED)]
    assert first.started and not second.started
    router.requeue(first)  # lost mid-stream: queued again, its first token to come again
    assert not first.started and first.pod is None
    assert router.pods["m1"].batch_prefilling == 1


# Properties --------------------------------------------------------------------------------

PODS = ("i1", "i2", "m1", "m2", "b1")
ROLE_OF = {"i": Role.INTERACTIVE, "m": Role.MIXED, "b": Role.BATCH}


@dataclass
class World:
    """The router under test and the truth kept beside it."""

    router: PoolRouter
    now_s: float = 0.0
    live: set[Ticket] = field(default_factory=set)

    def place_of(self, ticket: Ticket) -> str:
        if ticket.pod is not None:
            return "pod"
        if any(w[0] is ticket for w in self.router.waiting):
            return "waiting"
        if any(e[3] is ticket for e in self.router.batch._entries):
            return "batch"
        return "nowhere"


events = st.one_of(
    st.tuples(
        st.just("pod"), st.sampled_from(PODS), st.integers(0, 4), st.booleans(), st.booleans()
    ),
    st.tuples(st.just("interactive")),
    st.tuples(st.just("batch"), st.sampled_from([60.0, 600.0, 6000.0])),
    st.tuples(st.just("finish"), st.integers(0, 1000)),
    st.tuples(st.just("retry"), st.integers(0, 1000)),
    st.tuples(st.just("pin"), st.integers(0, 1000)),
    st.tuples(st.just("started"), st.integers(0, 1000)),
    st.tuples(st.just("abandon"), st.integers(0, 1000)),
    st.tuples(st.just("tick"), st.floats(0.0, 20.0)),
)


def _pick(world: World, index: int, *, in_flight: bool) -> Ticket | None:
    tickets = sorted(
        (t for t in world.live if (t.pod is not None) == in_flight), key=lambda t: t.request_id
    )
    return tickets[index % len(tickets)] if tickets else None


def _on_pod(world: World, event: tuple[object, ...]) -> list[Action]:
    _, name, cap, ready, remove = event
    assert isinstance(name, str) and isinstance(cap, int) and isinstance(ready, bool)
    router = world.router
    if remove:
        return [a for t in router.remove_pod(name) for a in router.retry(t, world.now_s)]
    return router.set_pod(name, ROLE_OF[name[0]], cap, ready=ready)


def _on_arrival(world: World, event: tuple[object, ...]) -> list[Action]:
    deadline_s = float(event[1]) if event[0] == "batch" else 0.0  # type: ignore[arg-type]
    ticket = interactive(world.now_s) if event[0] == "interactive" else batch(deadline_s)
    world.live.add(ticket)
    return world.router.submit(ticket, world.now_s)


def _on_tick(world: World, event: tuple[object, ...]) -> list[Action]:
    world.now_s += float(event[1])  # type: ignore[arg-type]
    return world.router.expire(world.now_s)


def _on_ticket(world: World, event: tuple[object, ...]) -> list[Action]:
    kind, index = event[0], int(event[1])  # type: ignore[call-overload]
    target = _pick(world, index, in_flight=kind != "abandon")
    if target is None:
        return []
    if kind == "pin":
        target.preemptible = False
        return []
    if kind == "retry":
        return world.router.retry(target, world.now_s)
    if kind == "started":
        return world.router.started(target)
    world.live.discard(target)
    if kind == "finish":
        return world.router.finish(target)
    return world.router.abandon(target)


HANDLERS = {
    "pod": _on_pod,
    "interactive": _on_arrival,
    "batch": _on_arrival,
    "tick": _on_tick,
    "finish": _on_ticket,
    "retry": _on_ticket,
    "pin": _on_ticket,
    "started": _on_ticket,
    "abandon": _on_ticket,
}


def apply(world: World, event: tuple[object, ...]) -> list[Action]:
    return HANDLERS[str(event[0])](world, event)


def check(world: World, before: dict[str, int], actions: list[Action]) -> None:
    router = world.router
    sent_to = {a.pod for a in actions if isinstance(a, Send)}
    for name in sent_to:
        pod = router.pods[name]
        assert pod.in_flight <= pod.cap_seqs, f"{name} above its cap"
    for pod in router.pods.values():
        # A pod over its cap (lowered) never grows.
        if pod.in_flight > pod.cap_seqs:
            assert pod.in_flight <= before.get(pod.name, 0)
    if router.waiting:
        for pod in router.ready_pods(Role.INTERACTIVE, Role.MIXED):
            assert pod.free_slots == 0, f"interactive waits beside a free slot on {pod.name}"
        lent = (RouteReason.BATCH_TO_MIXED, RouteReason.BATCH_TO_INTERACTIVE)
        batch_to_shared = [a for a in actions if isinstance(a, Send) and a.reason in lent]
        assert batch_to_shared == [], "batch took a shared slot while interactive waits"
    tuning = router.tuning
    for action in actions:
        if isinstance(action, Send) and action.reason is RouteReason.BATCH_TO_INTERACTIVE:
            assert tuning.batch_on_interactive and tuning.preempt_batch
            pod = router.pods[action.pod]
            assert pod.in_flight <= pod.cap_seqs - tuning.interactive_reserve_slots
    for action in actions:
        if isinstance(action, Refuse):
            world.live.discard(action.ticket)
            assert action.status in (429, 503) and action.message
    limit = tuning.batch_prefills_per_pod
    for pod in router.pods.values():
        unstarted = sum(not t.started for t in pod.batch)
        assert pod.batch_prefilling == unstarted, f"{pod.name} miscounts its batch prefills"
        if limit and pod.role is not Role.BATCH:
            assert unstarted <= limit, f"{pod.name} took batch work past its prefill limit"
    for ticket in world.live:
        assert world.place_of(ticket) != "nowhere", f"{ticket.request_id} lost"
        assert ticket.pod is not None or not ticket.started
        if ticket.pod is not None:
            pod = router.pods[ticket.pod]
            assert ticket in pod.interactive or ticket in pod.batch


@settings(max_examples=300, deadline=None)
@given(
    st.lists(events, max_size=60),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2),
    st.integers(0, 2),
)
def test_no_sequence_of_events_breaks_the_rules(
    script: list[tuple[object, ...]], preempt: bool, lend: bool, reserve: int, prefills: int
) -> None:
    tuning = RoutingTuning(
        max_queued_interactive=5,
        preempt_batch=preempt,
        batch_on_interactive=lend,
        interactive_reserve_slots=reserve,
        batch_prefills_per_pod=prefills,
    )
    world = World(PoolRouter(tuning))
    for event in script:
        before = {p.name: p.in_flight for p in world.router.pods.values()}
        check(world, before, apply(world, event))
