"""One pod in isolation: batch-size cap, KV cache, preemption, priorities, fast-forwarding."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.sim.instance import Instance, InstanceState
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.podmetrics import ITL_BUCKETS_S, PodCounters, histogram_quantile
from tests.sim.simkit import H100_LIKE, SIMPLE, drive_pod, live

BATCH = RequestClass.BATCH


def pod(
    latency: LatencyModel = SIMPLE,
    max_num_seqs: int = 8,
    *,
    role: Role = Role.INTERACTIVE,
    priority: bool = False,
    evicts: bool = False,
    exact: bool = False,
) -> Instance:
    made = Instance(
        0,
        role,
        max_num_seqs,
        latency,
        created_s=0.0,
        priority_scheduling=priority,
        preempt_for_priority=evicts,
        exact=exact,
    )
    made.state = InstanceState.READY
    return made


def with_kv(tokens: int) -> LatencyModel:
    return LatencyModel("small-kv", 10.0, 1.0, 0.01, 20.0, 0.1, 0.0, tokens)


@pytest.mark.parametrize("exact", [False, True])
def test_running_never_exceeds_max_num_seqs(exact: bool) -> None:
    p = pod(H100_LIKE, max_num_seqs=4, exact=exact)
    requests = [live(i, 100 + 10 * i, 20 + 3 * i) for i in range(20)]
    peak = 0

    def check(p: Instance) -> None:
        nonlocal peak
        peak = max(peak, p.n_running)
        assert p.n_running <= p.max_num_seqs

    done = drive_pod(p, [(0.001 * i, r) for i, r in enumerate(requests)], check=check)
    assert peak == 4
    assert sorted(r.request_id for r in done) == list(range(20))
    assert all(r.generated == r.output_tokens for r in done)


@pytest.mark.parametrize("exact", [False, True])
def test_kv_cache_never_overflows_and_preempts_when_full(exact: bool) -> None:
    p = pod(with_kv(400), max_num_seqs=16, exact=exact)
    requests = [live(i, 60, 80) for i in range(6)]

    def check(p: Instance) -> None:
        # Room for every running sequence's next token, as the scheduler guarantees.
        assert p.context_tokens + p.n_running <= p.kv_capacity_tokens

    done = drive_pod(p, [(0.0, r) for r in requests], check=check)
    assert len(done) == 6
    assert p.counters.preemptions == sum(r.preemptions for r in requests) > 0
    assert p.context_tokens == 0 and p.n_running == 0


def test_preemption_evicts_most_recent_which_recomputes() -> None:
    # Both fit at admission (2 * (30 + 1) <= 100); they then grow 2 tokens per step and fill
    # the cache after 19 steps, when the later one (id 2) must give way.
    p = pod(with_kv(100))
    first, second = live(1, 30, 40), live(2, 30, 40)
    done = drive_pod(p, [(0.0, first), (0.0, second)])
    assert [r.request_id for r in done] == [1, 2]
    assert (first.preemptions, second.preemptions) == (0, 1)
    # The victim keeps its 20 streamed tokens and recomputes them with its prompt when the
    # first one's completion frees the cache.
    assert second.first_token_s == first.first_token_s
    assert second.completion_s > first.completion_s


def test_interactive_admitted_before_earlier_batch_on_mixed() -> None:
    p = pod(max_num_seqs=1, role=Role.MIXED, priority=True)
    batch, interactive = live(1, 10, 5, BATCH), live(2, 10, 5)
    # Both wait while the pod is busy; the interactive one goes first although it came later.
    busy = live(3, 10, 50)
    done = drive_pod(p, [(0.0, busy), (0.01, batch), (0.02, interactive)])
    order = [r.request_id for r in done]
    assert order.index(2) < order.index(1)


def test_full_mixed_pod_keeps_its_batch_work_for_a_waiting_interactive_request() -> None:
    # vLLM 0.32 (issue 40004): no preemption at the cap; the interactive request takes the
    # first slot that frees, ahead of any batch request waiting.
    p = pod(max_num_seqs=2, role=Role.MIXED, priority=True)
    b1, b2, urgent = live(1, 10, 200, BATCH), live(2, 10, 200, BATCH), live(3, 10, 5)
    queued = live(4, 10, 5, BATCH)
    done = drive_pod(p, [(0.0, b1), (0.0, b2), (0.4, queued), (0.5, urgent)])
    assert b1.preemptions == b2.preemptions == p.counters.preemptions == 0
    assert urgent.first_token_s > b1.completion_s
    assert [r.request_id for r in done] == [1, 2, 3, 4]


def test_batch_evicted_for_interactive_on_full_mixed_pod_with_the_upstream_fix() -> None:
    p = pod(max_num_seqs=2, role=Role.MIXED, priority=True, evicts=True)
    b1, b2, urgent = live(1, 10, 200, BATCH), live(2, 10, 200, BATCH), live(3, 10, 5)
    done = drive_pod(p, [(0.0, b1), (0.0, b2), (0.5, urgent)])
    assert b2.preemptions == 1 and b1.preemptions == 0  # the most recent batch sequence
    # The interactive request starts at the first boundary after it arrives.
    assert urgent.first_token_s - 0.5 < 0.05
    assert [r.request_id for r in done] == [3, 1, 2]


def test_the_upstream_fix_changes_nothing_on_an_fcfs_pod() -> None:
    p = pod(max_num_seqs=2, evicts=True)
    b1, b2, urgent = live(1, 10, 200, BATCH), live(2, 10, 200, BATCH), live(3, 10, 5)
    done = drive_pod(p, [(0.0, b1), (0.0, b2), (0.5, urgent)])
    assert p.counters.preemptions == 0
    assert [r.request_id for r in done] == [1, 2, 3]


def test_fcfs_pod_does_not_prioritise() -> None:
    p = pod(max_num_seqs=1)
    busy, batch, interactive = live(3, 10, 50, BATCH), live(1, 10, 5, BATCH), live(2, 10, 5)
    done = drive_pod(p, [(0.0, busy), (0.01, batch), (0.02, interactive)])
    assert [r.request_id for r in done] == [3, 1, 2]


def test_arrival_mid_segment_is_admitted_at_next_iteration_boundary() -> None:
    p = pod()
    long, late = live(1, 100, 1000, BATCH), live(2, 100, 10)
    drive_pod(p, [(0.0, long), (0.1005, late)], until=1.0)
    # long: prefill 30 ms, then 11 ms steps: boundaries at 0.030 + 0.011 k. The next boundary
    # after 0.1005 is 0.107 (k=7); the admitted prefill then takes 11 + 30 ms.
    assert late.first_token_s == pytest.approx(0.107 + 0.041)


def test_one_token_request_completes_at_its_prefill() -> None:
    p = pod()
    one = live(1, 50, 1)
    drive_pod(p, [(0.0, one)])
    assert one.first_token_s == one.completion_s == pytest.approx(0.025)


def test_abort_keeps_streamed_tokens() -> None:
    p = pod()
    request = live(1, 100, 100)
    drive_pod(p, [(0.0, request)], until=0.2)
    aborted = p.abort_all(0.2)
    # Prefill 30 ms then 11 ms steps: 15 steps done by 0.2 s, so 16 tokens streamed.
    assert aborted == [request]
    assert request.generated == 16
    assert request.last_token_s == pytest.approx(0.030 + 15 * 0.011)
    assert p.n_running == 0 and p.context_tokens == 0


def test_scrape_mid_segment_accounts_whole_iterations() -> None:
    p = pod()
    drive_pod(p, [(0.0, live(1, 100, 100))], until=0.2)
    p.advance_to(0.2)
    assert p.counters.generation_tokens == 16
    assert p.iteration == 16
    assert p.kv_usage_ratio() == pytest.approx(116 / 1_000_000)


@settings(max_examples=60, deadline=None)
@given(
    seqs=st.integers(1, 300),
    context=st.integers(0, 300_000),
    steps=st.integers(1, 5000),
    fraction=st.floats(0.0, 1.0),
)
def test_whole_iterations_done_matches_boundary_times(
    seqs: int, context: int, steps: int, fraction: float
) -> None:
    p = pod(H100_LIKE, max_num_seqs=1000)
    p.n_running, p.context_tokens = seqs, context
    p._begin_segment(12.5, finish_iter=steps, single=False)
    p._seg_len = steps  # whatever the KV cache allows
    k = round(fraction * steps)
    at = p._time_at(k)
    assert p._iterations_done(at) == k
    if k:
        assert p._iterations_done(math.nextafter(at, -math.inf)) == k - 1


def test_itl_run_buckets_match_stepwise_observation() -> None:
    stepwise, run = PodCounters(), PodCounters()
    first, growth, steps = 0.009, 0.00013, 700
    for i in range(steps):
        stepwise.observe_itl(first + growth * i, 3)
    run.observe_itl_run(first, growth, steps, 3)
    assert sum(run.itl_buckets) == sum(stepwise.itl_buckets) == 3 * steps
    for a, b in zip(run.itl_buckets, stepwise.itl_buckets, strict=True):
        assert abs(a - b) <= 3  # a step exactly on a boundary may round either way


def test_histogram_quantile_interpolates_like_promql() -> None:
    counts = [0] * (len(ITL_BUCKETS_S) + 1)
    counts[1] = 50  # (0.01, 0.025]
    counts[2] = 50  # (0.025, 0.05]
    assert histogram_quantile(0.5, ITL_BUCKETS_S, counts) == pytest.approx(0.025)
    assert histogram_quantile(0.75, ITL_BUCKETS_S, counts) == pytest.approx(0.0375)
    counts[-1] = 900  # +Inf bucket holds the rank: the largest finite bound
    assert histogram_quantile(0.95, ITL_BUCKETS_S, counts) == ITL_BUCKETS_S[-1]
    assert math.isnan(histogram_quantile(0.5, ITL_BUCKETS_S, [0] * len(counts)))


def test_waiting_requests_are_handed_back_on_drain() -> None:
    p = pod(max_num_seqs=1)
    running, queued = live(1, 10, 500), live(2, 10, 5)
    drive_pod(p, [(0.0, running), (0.01, queued)], until=0.05)
    assert p.take_waiting() == [queued]
    assert p.n_waiting == 0 and p.n_running == 1


def _total(requests: list[LiveRequest]) -> int:
    return sum(r.output_tokens for r in requests)


def test_generation_counter_counts_every_token() -> None:
    p = pod(H100_LIKE, max_num_seqs=3)
    requests = [live(i, 50 + i, 30 + 7 * i) for i in range(7)]
    drive_pod(p, [(0.003 * i, r) for i, r in enumerate(requests)])
    assert p.counters.generation_tokens == _total(requests)
    assert sum(p.counters.ttft_buckets) == 7
    assert sum(p.counters.itl_buckets) == _total(requests) - 7


request_shape = st.tuples(
    st.floats(0.0, 2.0),  # arrival
    st.integers(1, 300),  # prompt
    st.integers(1, 200),  # output
    st.booleans(),  # interactive
)


@settings(max_examples=80, deadline=None)
@given(
    shapes=st.lists(request_shape, min_size=1, max_size=25),
    max_num_seqs=st.integers(1, 6),
    kv=st.integers(520, 1500),
    priority=st.booleans(),
    evicts=st.booleans(),
)
def test_fast_pod_matches_exact_pod(
    shapes: list[tuple[float, int, int, bool]],
    max_num_seqs: int,
    kv: int,
    priority: bool,
    evicts: bool,
) -> None:
    def run(exact: bool) -> list[tuple[int, float, float, int]]:
        p = pod(
            with_kv(kv),
            max_num_seqs,
            role=Role.MIXED,
            priority=priority,
            evicts=evicts,
            exact=exact,
        )
        arrivals = [
            (t, live(i, prompt, output, RequestClass.INTERACTIVE if inter else BATCH))
            for i, (t, prompt, output, inter) in enumerate(shapes)
        ]
        done = drive_pod(p, arrivals)
        assert len(done) == len(shapes)
        return sorted((r.request_id, r.first_token_s, r.completion_s, r.preemptions) for r in done)

    for fast, exact in zip(run(False), run(True), strict=True):
        assert fast[0] == exact[0] and fast[3] == exact[3]
        assert fast[1:3] == pytest.approx(exact[1:3], abs=1e-9)
