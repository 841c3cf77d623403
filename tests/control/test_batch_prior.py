"""The batch rule before lengths are known, sized for the time left after a startup, and
keeping the batch pods that still run work when the queue empties."""

from __future__ import annotations

import dataclasses
import math

import pytest

from chiron_operator.control.batch_scaling import (
    MEASURED_SAMPLES,
    PRIOR_SAMPLES,
    BatchContext,
    batch_context,
    decide_batch,
    instances_in_time,
)
from chiron_operator.control.waiting_time import assess_batch, queued_tokens_bound
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import NAN, BatchGroup, BatchQueue, PodSignals
from chiron_operator.core.state import GlobalState
from chiron_operator.core.tuning import PoolTuning, RoleBounds
from tests.control.test_global_scaling import (
    EMPTY_QUEUE,
    NOW_S,
    TUNING,
    backlog,
    batch_pod,
    decide,
    snapshot,
)

Z = TUNING.global_scaling.waiting_time_z


def queue(mean: float, std: float, samples: float, requests: int = 400) -> BatchQueue:
    return BatchQueue((BatchGroup(NOW_S + 600.0, requests),), mean, std, 1.0, samples)


def bound_of(context: BatchContext) -> float:
    """The output-token bound the context sized the single group with."""
    return context.assessment.open_demands[0][0]


# --- the output-length prior --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lengths", "expected", "from_prior"),
    [
        # Nothing completed: the prior's mean, a spread as wide, weighed as 4 completions.
        (queue(NAN, NAN, math.inf), (256.0, 256.0, PRIOR_SAMPLES), True),
        (queue(300.0, 100.0, 0.0), (256.0, 256.0, PRIOR_SAMPLES), True),
        # A few short completions: their mean and spread are raised to the prior's.
        (queue(100.0, 50.0, 10.0), (256.0, 256.0, 10.0), True),
        # Longer than the prior: what was measured stands, with its own sample count.
        (queue(400.0, 300.0, 10.0), (400.0, 300.0, 10.0), True),
        # Enough completions: the measured lengths alone.
        (queue(100.0, 50.0, MEASURED_SAMPLES), (100.0, 50.0, MEASURED_SAMPLES), False),
    ],
)
def test_lengths_are_at_least_the_priors_until_enough_completed(
    lengths: BatchQueue, expected: tuple[float, float, float], from_prior: bool
) -> None:
    context = batch_context(snapshot([], lengths), TUNING, GlobalState())
    mean, std, samples = expected
    assert bound_of(context) == pytest.approx(
        queued_tokens_bound(400, mean, std, Z, mean_samples=samples)
    )
    assert context.lengths_from_prior is from_prior


def test_the_prior_mean_is_tunable() -> None:
    longer = dataclasses.replace(TUNING.global_scaling, batch_output_tokens_prior=1000.0)
    context = batch_context(
        snapshot([], queue(NAN, NAN, math.inf)), PoolTuning(global_scaling=longer), GlobalState()
    )
    assert bound_of(context) == pytest.approx(
        queued_tokens_bound(400, 1000.0, 1000.0, Z, mean_samples=PRIOR_SAMPLES)
    )


def test_a_first_backlog_is_sized_from_the_prior_and_says_so() -> None:
    # 3,000 requests due in 12 minutes, none completed: it used to wait for a first completion.
    backlog_ = BatchQueue((BatchGroup(NOW_S + 720.0, 3000),), NAN, NAN, 1.0)
    proposals, observations, _ = decide(snapshot([], backlog_))
    verdict = proposals[Role.BATCH]
    # About 1.66 M tokens by the bound (more than half of it the mean's error over 4
    # pseudo-completions); at the 2,000 tokens/s prior over the 600 s left after the 120 s
    # startup, 1.39 instances: 2.
    tokens = queued_tokens_bound(3000, 256.0, 256.0, Z, mean_samples=PRIOR_SAMPLES)
    assert observations["batch_required_tokens_per_s"] == pytest.approx(tokens / 720.0)
    assert tokens == pytest.approx(1.663e6, rel=1e-3)
    assert verdict.value == 2
    assert verdict.reason is Reason.BATCH_DEADLINES_AT_RISK
    assert "output lengths at least the prior's until 30 complete" in verdict.message


def test_an_unknown_waiting_time_holds() -> None:
    lengths = BatchQueue((BatchGroup(NOW_S + 60.0, 9),), NAN, NAN, 1.0)
    pods = [batch_pod(2000.0)] * 2
    nan_assessment = assess_batch(lengths, NOW_S, NAN, Z)
    context = BatchContext(nan_assessment, NAN, 2000.0, NAN)
    held = decide_batch(snapshot(pods, lengths), TUNING, context)
    assert (held.value, held.reason) == (2, Reason.METRICS_MISSING)
    assert held.message == "batch waiting time unknown (9 requests queued): hold 2 batch"
    # What cannot be measured never scales anything, not even with nothing running.
    none = decide_batch(snapshot([], lengths), TUNING, context)
    assert (none.value, none.reason) == (0, Reason.METRICS_MISSING)


# --- sized for the time left once new instances are ready ----------------------------------------


@pytest.mark.parametrize(
    ("demands", "theta", "startup_s", "expected"),
    [
        # 720,000 tokens in 320 s; 1,000 tokens/s there deliver 320,000 of them.
        (((720_000.0, 320.0),), 1000.0, 0.0, 400_000 / (1000.0 * 320.0)),
        (((720_000.0, 320.0),), 1000.0, 120.0, 400_000 / (1000.0 * 200.0)),
        (((720_000.0, 320.0),), 1000.0, 220.0, 400_000 / (1000.0 * 100.0)),
        # Due before anything started now is ready: more instances cannot save it.
        (((720_000.0, 320.0),), 1000.0, 320.0, 0.0),
        # Covered by what runs now: nothing to add.
        (((300_000.0, 320.0),), 1000.0, 120.0, 0.0),
        # The worst group decides: a later one short by more per second of useful time.
        (((300_000.0, 320.0), (2_000_000.0, 1000.0)), 1000.0, 120.0, 1_000_000 / 880_000.0),
    ],
)
def test_instances_in_time(
    demands: tuple[tuple[float, float], ...], theta: float, startup_s: float, expected: float
) -> None:
    assessment = dataclasses.replace(assess_batch(EMPTY_QUEUE, NOW_S, 0.0, Z), open_demands=demands)
    assert instances_in_time(assessment, theta, 1000.0, startup_s) == pytest.approx(expected)
    assert instances_in_time(assessment, theta, 0.0, startup_s) == math.inf


def test_open_demands_are_the_open_groups_bounds_in_deadline_order() -> None:
    lengths = backlog((600.0, 10), (-5.0, 3), (300.0, 20))
    assessment = assess_batch(lengths, NOW_S, 1000.0, Z)
    # Earliest deadline first: a group waits for every group due no later than it, the
    # overdue one included.
    (first, first_left_s), (second, second_left_s) = assessment.open_demands
    assert (first_left_s, second_left_s) == (300.0, 600.0)
    assert (first, second) == pytest.approx((23 * 300.0, 33 * 300.0))


@pytest.mark.parametrize(("learned_s", "added"), [(0.0, 2), (220.0, 4)])
def test_a_learned_startup_sizes_the_addition(learned_s: float, added: int) -> None:
    # 2400 x 300 tokens due in 320 s, 1,000 tokens/s running: 400,000 short.
    at_risk = backlog((320.0, 2400))
    state = GlobalState(batch_instance_tokens_per_s=1000.0, startup_s=learned_s)
    proposals, observations, _ = decide(snapshot([batch_pod(1000.0)], at_risk), state=state)
    assert observations["startup_s"] == learned_s
    assert proposals[Role.BATCH].value == 1 + added
    assert proposals[Role.BATCH].message.endswith(f"ready in {learned_s:.0f} s")


# --- an empty queue keeps the batch pods still running work --------------------------------------


def stale(pod: PodSignals) -> PodSignals:
    return dataclasses.replace(pod, sample_age_s=TUNING.guards.metrics_staleness_s + 1)


@pytest.mark.parametrize(
    ("pods", "floor", "expected", "kept"),
    [
        ([batch_pod(2000.0, running=0.0)] * 3, 0, 0, None),
        ([batch_pod(2000.0, running=0.0)] * 3, 1, 1, None),
        # Two still run requests: keep two (the idle one goes first, by deletion cost).
        ([batch_pod(2000.0, running=4.0)] * 2 + [batch_pod(0.0, running=0.0)], 0, 2, 2),
        # No running gauge, or no fresh sample: they may be running work, keep them.
        ([batch_pod(2000.0, running=NAN), stale(batch_pod(2000.0, running=0.0))], 0, 2, 2),
        # The min is above what still runs: the min.
        ([batch_pod(2000.0, running=4.0)] + [batch_pod(0.0, running=0.0)] * 2, 2, 2, None),
    ],
)
def test_an_empty_queue_keeps_the_pods_still_running_batch_work(
    pods: list[PodSignals], floor: int, expected: int, kept: int | None
) -> None:
    bounds = {**TUNING.bounds, Role.BATCH: RoleBounds(min_replicas=floor, max_replicas=8)}
    proposals, _, _ = decide(snapshot(pods, EMPTY_QUEUE), PoolTuning(bounds=bounds))
    verdict = proposals[Role.BATCH]
    assert (verdict.value, verdict.reason) == (expected, Reason.BATCH_QUEUE_EMPTY)
    if kept is None:
        assert verdict.message == f"batch queue empty: batch to its min {floor}"
    else:
        assert verdict.message == (
            f"batch queue empty, but {kept} batch pod(s) still run batch work: keep {kept} "
            "until they finish"
        )


def test_an_empty_queue_never_keeps_more_than_requested() -> None:
    # Three ready pods working, but the Deployment already asks for two: not back up to three.
    working = [batch_pod(2000.0, running=4.0)] * 3
    proposals, _, _ = decide(snapshot(working, EMPTY_QUEUE, replicas={Role.BATCH: 2}))
    assert proposals[Role.BATCH].value == 2
