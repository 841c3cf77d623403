"""Aborting one request on a pod: what the gateway's cut-off does to vLLM.

vLLM frees an aborted request between steps: a waiting one at once, a running one when the
iteration in progress ends. Its KV cache is freed and its tokens are lost (the gateway resends
it from scratch); it is not a preemption.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.sim.instance import Instance, InstanceState
from chiron_operator.sim.live import LiveRequest
from tests.sim.simkit import SIMPLE, live

BATCH = RequestClass.BATCH
Script = Sequence[tuple[float, str, LiveRequest]]
"""(time, "send" or "abort", request)."""


def mixed_pod(latency: LatencyModel = SIMPLE, *, cap: int = 4, exact: bool = False) -> Instance:
    made = Instance(0, Role.MIXED, cap, latency, created_s=0.0, priority_scheduling=True)
    made.exact = exact
    made.state = InstanceState.READY
    return made


def drive(pod: Instance, script: Script, until: float = math.inf) -> list[LiveRequest]:
    """Run one pod through sends and aborts (at their times, before a boundary at a tie) and
    its own boundaries; returns completions in order."""
    pending = sorted(script, key=lambda e: e[0])
    boundary: float | None = None
    done: list[LiveRequest] = []
    while True:
        next_event = pending[0][0] if pending else math.inf
        next_boundary = math.inf if boundary is None else boundary
        now = min(next_event, next_boundary)
        if now > until or now == math.inf:
            return done
        if next_event <= next_boundary:
            _, action, request = pending.pop(0)
            if action == "abort" and request.completion_s == request.completion_s:
                continue  # it finished first: nothing is in flight to abort
            moved = pod.enqueue(request, now) if action == "send" else pod.abort(request, now)
            boundary = boundary if moved is None else moved
            continue
        done.extend(pod.end_segment(now))
        boundary = pod.start_segment(now)


def kv_of_running(pod: Instance) -> int:
    """Prompt + emitted tokens of every running sequence (its whole prompt once admitted)."""
    return sum(
        r.prompt_tokens + r.output_tokens - (r.finish_iter - pod.iteration)
        for group in pod.running
        for r in group
    )


def test_a_running_request_leaves_when_the_iteration_in_progress_ends() -> None:
    p = mixed_pod()
    victim, other = live(1, 100, 1000, BATCH), live(2, 100, 1000, BATCH)
    drive(p, [(0.0, "send", victim), (0.0, "send", other)], until=0.2)
    cut_s = p.abort(victim, 0.2)
    # Steps of 12 ms (two sequences): the abort ends the segment at the next one.
    assert cut_s is not None and 0.2 < cut_s <= 0.2 + 0.012
    assert p.pending_abort(victim) and p.n_running == 2
    p.end_segment(cut_s)
    assert p.released == [victim] and not p.pending_abort(victim)
    assert (victim.generated, victim.running_on) == (0, None)
    assert p.n_running == 1 and p.context_tokens == kv_of_running(p) > 100
    assert p.counters.preemptions == 0 and victim.preemptions == 0
    # The other one goes on alone: the next segment runs to its completion.
    end_s = p.start_segment(cut_s)
    assert end_s is not None and end_s > cut_s + 0.011 * 500


def test_a_waiting_request_leaves_at_once() -> None:
    p = mixed_pod(cap=1)
    running, waiting = live(1, 10, 1000, BATCH), live(2, 10, 5, BATCH)
    drive(p, [(0.0, "send", running), (0.01, "send", waiting)], until=0.05)
    assert p.abort(waiting, 0.05) is None
    assert (p.n_waiting, p.released, waiting.generated) == (0, [], 0)


def test_an_abort_between_segments_takes_effect_at_once() -> None:
    # The router acts inside a boundary (a completion frees a slot): after `end_segment`,
    # before `start_segment`. Exact stepping: the first segment is the prompts' head alone.
    p = mixed_pod(exact=True)
    victim, other = live(1, 10, 1000, BATCH), live(2, 10, 1000)
    p.enqueue(victim, 0.0)
    p.enqueue(other, 0.0)
    p.end_segment(0.0)
    head_end_s = p.start_segment(0.0)
    assert head_end_s is not None
    p.end_segment(head_end_s)  # both prompts done: a token each
    assert p.abort(victim, head_end_s) is None and not p.pending_abort(victim)
    assert p.n_running == 1 and p.context_tokens == kv_of_running(p) == 10 + 1
    assert victim.generated == 0 and victim.running_on is None


def test_a_resent_request_starts_over_from_its_prompt() -> None:
    p = mixed_pod()
    request = live(1, 100, 50, BATCH)
    script = [(0.0, "send", request), (0.2, "abort", request), (0.5, "send", request)]
    done = drive(p, script)
    assert done == [request] and request.generated == 50
    # Its first token came after the resend: the tokens of the first run were lost.
    assert request.first_token_s > 0.5 and request.completion_s > 0.5 + 49 * 0.011
    assert p.counters.generation_tokens > 50  # the lost tokens were generated all the same


def test_abort_all_leaves_out_what_was_already_aborted() -> None:
    p = mixed_pod()
    victim, other = live(1, 100, 1000, BATCH), live(2, 100, 1000)
    drive(p, [(0.0, "send", victim), (0.0, "send", other)], until=0.2)
    assert p.abort(victim, 0.2) is not None
    assert p.abort_all(0.201) == [other]
    assert p.released == [victim] and victim.generated == 0 and other.generated > 0


event = st.tuples(st.floats(0.0, 1.0), st.integers(1, 300), st.integers(1, 120), st.booleans())


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(event, min_size=2, max_size=12),
    aborts=st.lists(st.tuples(st.integers(0, 11), st.floats(0.0, 1.5)), max_size=4),
    cap=st.integers(1, 5),
)
def test_fast_pod_matches_exact_pod_with_aborts(
    shapes: list[tuple[float, int, int, bool]], aborts: list[tuple[int, float]], cap: int
) -> None:
    def run(exact: bool) -> list[tuple[int, float, float]]:
        small_kv = LatencyModel("small-kv", 10.0, 1.0, 0.01, 20.0, 0.1, 0.0, 900)
        p = mixed_pod(small_kv, cap=cap, exact=exact)
        requests = [
            live(i, prompt, out, RequestClass.INTERACTIVE if inter else BATCH)
            for i, (_, prompt, out, inter) in enumerate(shapes)
        ]
        script: list[tuple[float, str, LiveRequest]] = [
            (t, "send", r) for (t, *_), r in zip(shapes, requests, strict=True)
        ]
        # An abort only for a request sent before it and not aborted already.
        aborted: set[int] = set()
        for index, at in aborts:
            if index < len(requests) and index not in aborted and shapes[index][0] < at:
                aborted.add(index)
                script.append((at, "abort", requests[index]))
        done = drive(p, script)
        return sorted((r.request_id, r.first_token_s, r.completion_s) for r in done)

    fast, exact = run(False), run(True)
    assert [r[0] for r in fast] == [r[0] for r in exact]
    for f, e in zip(fast, exact, strict=True):
        assert f[1:] == pytest.approx(e[1:], abs=1e-9)
