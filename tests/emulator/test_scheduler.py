"""The scheduler's rules, step by step, without a clock."""

from __future__ import annotations

import random

import pytest

from chiron_operator.emulator.scheduler import Policy, Scheduler, SeqState, Sequence, Step
from chiron_operator.perfmodel.profiles import profile


def make(
    *,
    cap: int = 4,
    blocks: int = 10_000,
    block_size: int = 16,
    policy: Policy = Policy.FCFS,
    budget: int = 8192,
    preempt_for_priority: bool = False,
) -> Scheduler:
    return Scheduler(
        max_num_seqs=cap,
        kv_blocks=blocks,
        block_size=block_size,
        policy=policy,
        max_num_batched_tokens=budget,
        preempt_for_priority=preempt_for_priority,
    )


def seq(name: str, prompt: int = 10, out: int = 5, priority: int = 0) -> Sequence:
    return Sequence(name, prompt, out, priority)


def names(seqs: tuple[Sequence, ...] | list[Sequence]) -> list[str]:
    return [s.request_id for s in seqs]


def run_step(s: Scheduler) -> Step:
    step = s.schedule()
    s.complete(step)
    return step


def test_admission_respects_max_num_seqs() -> None:
    s = make(cap=4)
    for i in range(10):
        s.add(seq(f"r{i}"))
    step = s.schedule()
    assert names(step.prefills) == ["r0", "r1", "r2", "r3"]
    assert (s.num_running, s.num_waiting) == (4, 6)
    s.complete(step)
    step = s.schedule()
    assert len(step.decodes) == 4 and not step.prefills


def test_fcfs_ignores_priority() -> None:
    s = make(cap=1)
    s.add(seq("first", priority=10))
    s.add(seq("second", priority=0))
    assert names(s.schedule().prefills) == ["first"]


def test_priority_policy_admits_lower_values_first_then_by_arrival() -> None:
    s = make(cap=1, policy=Policy.PRIORITY)
    for name, prio in (("a10", 10), ("b0", 0), ("c5", 5), ("d0", 0)):
        s.add(seq(name, out=1, priority=prio))
    order = [names(run_step(s).prefills)[0] for _ in range(4)]
    assert order == ["b0", "d0", "c5", "a10"]


def test_priority_request_waits_for_a_free_slot_by_default() -> None:
    # vLLM 0.32 (issue 40004): a waiting request never preempts, whatever its priority.
    s = make(cap=2, policy=Policy.PRIORITY)
    s.add(seq("batch-short", out=3, priority=10))
    s.add(seq("batch-long", out=10, priority=10))
    run_step(s)
    s.add(seq("batch-queued", priority=10))
    s.add(seq("interactive", priority=0))
    for _ in range(2):
        step = run_step(s)
        assert not step.preempted and not step.prefills
        assert names(step.decodes) == ["batch-short", "batch-long"]
    # batch-short finished at the last step: its slot goes to the best priority waiting.
    step = s.schedule()
    assert names(step.prefills) == ["interactive"] and names(step.decodes) == ["batch-long"]
    assert not step.preempted and s.num_preemptions == 0 and s.num_waiting == 1


def test_priority_request_waits_for_kv_blocks_by_default() -> None:
    # block_size 1 makes blocks tokens: the batch holds 9 of 10, the newcomer needs 3.
    s = make(cap=8, blocks=10, block_size=1, policy=Policy.PRIORITY)
    s.add(seq("batch", prompt=8, out=2, priority=10))
    run_step(s)
    s.add(seq("interactive", prompt=2, out=1, priority=0))
    step = run_step(s)
    assert names(step.decodes) == ["batch"] and not step.prefills and not step.preempted
    assert names(s.schedule().prefills) == ["interactive"] and s.num_preemptions == 0


def test_preempt_for_priority_evicts_a_worse_running_one_when_the_batch_is_full() -> None:
    s = make(cap=2, policy=Policy.PRIORITY, preempt_for_priority=True)
    s.add(seq("batch-old", priority=10))
    s.add(seq("batch-new", priority=10))
    run_step(s)
    s.add(seq("interactive", priority=0))
    step = s.schedule()
    # The worst priority, latest arrival among equals, is the victim; it keeps its tokens.
    assert names(step.preempted) == ["batch-new"]
    assert names(step.prefills) == ["interactive"]
    assert names(step.decodes) == ["batch-old"]
    victim = step.preempted[0]
    assert (victim.state, victim.generated, victim.preemptions) == (SeqState.WAITING, 1, 1)
    assert s.num_preemptions == 1


def test_preempt_for_priority_does_nothing_under_fcfs() -> None:
    s = make(cap=1, preempt_for_priority=True)
    s.add(seq("first", priority=10))
    run_step(s)
    s.add(seq("second", priority=0))
    step = s.schedule()
    assert not step.preempted and names(step.decodes) == ["first"] and not step.prefills


def test_equal_priority_never_preempts_even_with_preempt_for_priority() -> None:
    s = make(cap=1, policy=Policy.PRIORITY, preempt_for_priority=True)
    s.add(seq("first", priority=5))
    run_step(s)
    s.add(seq("second", priority=5))
    step = s.schedule()
    assert not step.preempted and not step.prefills


def test_fcfs_never_preempts_for_a_waiting_request() -> None:
    s = make(cap=1)
    s.add(seq("first", priority=10))
    run_step(s)
    s.add(seq("second", priority=0))
    step = s.schedule()
    assert not step.preempted and names(step.decodes) == ["first"]


def test_kv_growth_preempts_the_most_recent_and_admits_nothing_that_step() -> None:
    # block_size 1 makes blocks tokens: each sequence holds prompt + emitted + 1.
    s = make(cap=8, blocks=10, block_size=1)
    # prompt + out = 10 = the capacity: like max-model-len, one sequence always fits alone.
    s.add(seq("old", prompt=4, out=6))
    s.add(seq("new", prompt=4, out=6))
    s.add(seq("queued", prompt=1, out=1))
    step = run_step(s)
    assert names(step.prefills) == ["old", "new"] and s.used_blocks == 10
    step = s.schedule()
    assert names(step.preempted) == ["new"] and names(step.decodes) == ["old"]
    assert not step.prefills  # vLLM admits nothing at a boundary with preemptions
    s.complete(step)
    # The victim is back at the head of the queue, before "queued", and recomputes 4 + 1 tokens.
    while s.num_running:
        run_step(s)
    step = s.schedule()
    assert names(step.prefills) == ["new", "queued"]
    assert step.prefill_lengths == (5, 1)


def test_kv_growth_under_priority_preempts_the_worst_priority_even_if_older() -> None:
    s = make(cap=8, blocks=10, block_size=1, policy=Policy.PRIORITY)
    s.add(seq("batch", prompt=4, out=6, priority=10))
    s.add(seq("interactive", prompt=4, out=6, priority=0))
    run_step(s)
    step = s.schedule()
    assert names(step.preempted) == ["batch"] and names(step.decodes) == ["interactive"]
    assert s.num_preemptions == 1


def test_blocks_are_counted_in_whole_blocks_and_released() -> None:
    s = make(blocks=100, block_size=16)
    a = seq("a", prompt=15, out=3)
    s.add(a)
    run_step(s)
    assert s.used_blocks == 1  # 15 + 1 tokens
    run_step(s)
    assert s.used_blocks == 2  # 17 tokens
    run_step(s)
    assert a.state is SeqState.FINISHED and s.used_blocks == 0 and s.kv_usage == 0.0


def test_a_prompt_over_the_token_budget_is_prefilled_in_chunks() -> None:
    s = make(cap=8, budget=100)
    for i in range(3):
        s.add(seq(f"p{i}", prompt=150, out=3))
    first = run_step(s)
    assert names(first.prefills) == ["p0"] and first.prefill_lengths == (100,)
    assert not first.completing and all(x.generated == 0 for x in first.prefills)
    # p0's last 50 tokens come first and it emits its first token; p1 gets what is left.
    second = run_step(s)
    assert names(second.prefills) == ["p0", "p1"]
    assert second.prefill_lengths == (50, 50) and second.prefill_starts == (100, 0)
    assert names(second.completing) == ["p0"]
    # Then p0 decodes (one token of the budget) and p1 takes the other 99: p2 waits.
    third = run_step(s)
    assert names(third.decodes) == ["p0"] and third.num_tokens == 100
    assert names(third.prefills) == ["p1"] and third.prefill_starts == (50,)
    assert s.num_waiting == 1


def test_the_budget_counts_decodes_too() -> None:
    s = make(cap=8, budget=40)
    s.add(seq("a", prompt=20))
    run_step(s)
    s.add(seq("b", prompt=20))
    s.add(seq("c", prompt=20))
    # 40 - 1 (a's decode) - 20 (b) leaves 19 of c's 20 tokens for this step.
    step = s.schedule()
    assert names(step.prefills) == ["b", "c"] and step.prefill_lengths == (20, 19)
    assert names(step.completing) == ["b"]


def test_abort_frees_a_running_sequence_and_skips_a_waiting_one() -> None:
    s = make(cap=1)
    a, b, c = seq("a"), seq("b"), seq("c")
    for x in (a, b, c):
        s.add(x)
    step = s.schedule()
    assert s.abort(b) and s.num_waiting == 1
    assert s.abort(a) and s.used_blocks == 0 and s.num_running == 0
    assert not s.abort(a)
    assert s.complete(step) == []
    assert names(s.schedule().prefills) == ["c"]


def test_duration_is_the_batch_decode_step_plus_each_prefill() -> None:
    model = profile("llama31-8b-a100")
    s = make(cap=8)
    s.add(seq("a", prompt=100, out=10))
    first = s.schedule()
    assert first.duration_s(model) == pytest.approx(model.prefill_s(100))
    s.complete(first)
    s.add(seq("b", prompt=300))
    step = s.schedule()
    assert step.decode_context_tokens == 101 and step.num_tokens == 301
    expected = model.decode_step_s(1, 101) + model.prefill_s(300)
    assert step.duration_s(model) == pytest.approx(expected)


def test_a_chunk_step_costs_the_decode_step_plus_its_chunk() -> None:
    model = profile("llama31-8b-a100")
    s = make(cap=8, budget=512)
    s.add(seq("a", prompt=100, out=50))
    s.complete(s.schedule())
    s.add(seq("long", prompt=2000, out=2))
    total = 0.0
    while not (step := s.schedule()).completing:
        assert step.decode_context_tokens > 0 and step.num_tokens == 512
        total += step.duration_s(model) - model.decode_step_s(1, step.decode_context_tokens)
        s.complete(step)
    total += step.duration_s(model) - model.decode_step_s(1, step.decode_context_tokens)
    # The chunks of one prompt cost the whole prompt's (unfloored) quadratic.
    assert total == pytest.approx(model.prefill_chunk_s(0, 2000))


@pytest.mark.parametrize(
    ("policy", "evict"), [(Policy.FCFS, False), (Policy.PRIORITY, False), (Policy.PRIORITY, True)]
)
def test_invariants_hold_under_random_load(policy: Policy, evict: bool) -> None:
    rng = random.Random(7)
    s = make(cap=6, blocks=40, block_size=4, policy=policy, preempt_for_priority=evict)
    live: list[Sequence] = []
    produced = 0
    for i in range(3000):
        if rng.random() < 0.3:
            x = seq(f"r{i}", rng.randint(1, 60), rng.randint(1, 40), rng.choice((0, 1, 10)))
            s.add(x)
            live.append(x)
        if live and rng.random() < 0.02:
            s.abort(rng.choice(live))
        step = s.schedule()
        running = [x for x in live if x.state is SeqState.RUNNING]
        assert len(running) == s.num_running <= 6
        assert sum(x.held_blocks for x in running) == s.used_blocks <= 40
        waiting = [x for x in live if x.state is SeqState.WAITING]
        assert len(waiting) == s.num_waiting
        produced += len(s.complete(step))
        assert all(x.generated <= x.max_tokens for x in live)
    finished = [x for x in live if x.state is SeqState.FINISHED]
    assert finished and all(x.generated == x.max_tokens for x in finished)
    assert produced >= sum(x.max_tokens for x in finished)
