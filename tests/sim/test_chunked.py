"""Chunked prefill (vLLM V1's default): a step's token budget, chunk costs, TTFT and ITL."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from chiron_operator.core.enums import Role
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.sim.instance import Instance, InstanceState
from chiron_operator.sim.live import LiveRequest
from tests.sim.simkit import drive_pod, live

# Context-dependent decode, quadratic prefill with a floor: every term of the step cost matters.
CHUNKY = LatencyModel("chunky", 10.0, 1.0, 0.01, 20.0, 0.1, 1e-4, 1_000_000, prefill_floor_ms=25.0)


def pod(budget: int | None, *, exact: bool = False, max_num_seqs: int = 16) -> Instance:
    made = Instance(
        0,
        Role.INTERACTIVE,
        max_num_seqs,
        CHUNKY,
        created_s=0.0,
        exact=exact,
        max_num_batched_tokens=budget,
    )
    made.state = InstanceState.READY
    return made


def test_chunks_of_a_prompt_sum_to_the_whole_prompt_quadratic() -> None:
    cuts = [0, 255, 510, 765, 1000]
    total = sum(CHUNKY.prefill_chunk_s(s, e) for s, e in itertools.pairwise(cuts))
    whole_ms = 20.0 + 0.1 * 1000 + 1e-4 * 1000**2
    assert total == pytest.approx(whole_ms / 1000.0, rel=1e-12)


@pytest.mark.parametrize("exact", [False, True])
def test_chunked_prompt_ttft_is_the_sum_of_its_chunk_steps(exact: bool) -> None:
    p = pod(256, exact=exact)
    decoder, long = live(1, 100, 500), live(2, 1000, 5)
    drive_pod(p, [(0.0, decoder), (0.05, long)])
    # The decoder alone: a prefill-only step (floored), then decode steps until the first
    # boundary at or after the long prompt's arrival.
    t = max(CHUNKY.prefill_s(100), CHUNKY.prefill_chunk_s(0, 100))
    assert decoder.first_token_s == pytest.approx(t, abs=1e-12)
    context = 101
    while t < 0.05:
        t += CHUNKY.decode_step_s(1, context)
        context += 1
    # Then 255 prompt tokens per step (the budget less the decoder's token), one decode each.
    cuts = [0, 255, 510, 765, 1000]
    for start, end in itertools.pairwise(cuts):
        t += CHUNKY.decode_step_s(1, context) + CHUNKY.prefill_chunk_s(start, end)
        context += 1
    assert long.first_token_s == pytest.approx(t, abs=1e-9)
    assert long.completion_s > long.first_token_s
    assert p.counters.prompt_tokens == 1100


def _step_durations(budget: int | None, decoders: int, prompt: int) -> list[float]:
    """Every iteration's duration (exact mode) while `decoders` sequences decode and a
    `prompt`-token request arrives."""
    p = pod(budget, exact=True)
    steps: list[float] = []
    last = [0.0]

    def check(pod_: Instance) -> None:
        if pod_.scheduled_s < float("inf"):
            steps.append(pod_.scheduled_s - last[0])
            last[0] = pod_.scheduled_s

    arrivals = [(0.0, live(i, 50, 400)) for i in range(decoders)]
    drive_pod(p, [*arrivals, (0.5, live(99, prompt, 2))], check=check)
    return steps


def test_decode_gaps_next_to_a_long_prompt_are_bounded_by_the_budget() -> None:
    prompt, budget, decoders = 6000, 512, 8
    chunked = _step_durations(budget, decoders, prompt)
    # The dearest step decodes every sequence at its largest context and computes the prompt's
    # last budget's worth of tokens.
    chunk = budget - decoders
    bound = CHUNKY.decode_step_s(decoders, decoders * (50 + 400)) + CHUNKY.prefill_chunk_s(
        prompt - chunk, prompt
    )
    assert max(chunked[1:]) <= bound
    # Without chunking the same prompt stalls every decoder for its whole prefill.
    whole = _step_durations(None, decoders, prompt)
    assert max(whole[1:]) >= CHUNKY.prefill_s(prompt) > 2 * bound


@pytest.mark.parametrize("exact", [False, True])
def test_token_budget_is_respected_every_step(exact: bool) -> None:
    rng = np.random.default_rng(3)
    budget, p = 300, pod(300, exact=exact, max_num_seqs=12)
    prompts = rng.integers(1, 1500, size=60)
    arrivals = [(float(0.02 * i), live(i, int(n), 1 + i % 40)) for i, n in enumerate(prompts)]
    partial_seen = 0

    def check(pod_: Instance) -> None:
        nonlocal partial_seen
        # Just scheduled: the head's chunks and decoders, or a decode-only step.
        chunks = pod_._chunks
        tokens = sum(end - start for _, start, end, _ in chunks) + pod_._head_seqs
        assert (tokens if chunks else pod_.n_running) <= budget
        cut = [c for c in chunks if c[2] < c[3]]
        assert len(cut) <= 1 and (not cut or cut[0][0] is pod_._partial)
        partial_seen += bool(cut)

    done = drive_pod(p, arrivals, check=check)
    assert len(done) == 60 and partial_seen > 0
    assert all(r.generated == r.output_tokens for r in done)
    assert p.counters.prompt_tokens == int(prompts.sum())


def test_preempted_partial_prompt_recomputes_from_scratch() -> None:
    # Both fit at admission (201 + 1 + 901 <= 1150), but the first's growth fills the cache
    # after 48 steps, while the second, 9 prompt tokens per step, is still being prefilled.
    model = LatencyModel("small-kv", 10.0, 1.0, 0.01, 20.0, 0.1, 0.0, 1_150)
    p = Instance(0, Role.INTERACTIVE, 4, model, created_s=0.0, max_num_batched_tokens=10)
    p.state = InstanceState.READY
    first, second = live(1, 200, 400), live(2, 900, 5)

    def check(pod_: Instance) -> None:
        assert pod_.context_tokens + pod_.n_running <= pod_.kv_capacity_tokens

    done: list[LiveRequest] = drive_pod(p, [(0.0, first), (0.01, second)], check=check)
    assert sorted(r.request_id for r in done) == [1, 2]
    assert (first.preemptions, second.preemptions) == (0, 1)
    assert second.generated == 5
    # Recomputed from its first token once the first one's completion frees the cache.
    assert p.counters.prompt_tokens > 200 + 900
    assert second.first_token_s > first.completion_s
