"""The CLT waiting-time bound: exact cases, monotonicity, the mean's own uncertainty, and
coverage on real output lengths."""

from __future__ import annotations

import itertools
import math
from typing import Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.control.waiting_time import (
    BatchAssessment,
    assess_batch,
    queued_tokens_bound,
    waiting_time_bound_s,
)
from chiron_operator.core.snapshot import BatchGroup, BatchQueue
from chiron_operator.sim.workloads import length_samples

NOW_S = 1000.0
P99_Z = 2.33
INF = math.inf  # the mean is exact: Chiron's bound
# Queue-length bins for the coverage test: small queues first.
N_BINS = ((20, 50), (50, 200), (200, 1000), (1000, 5001))
QUEUES_PER_BIN = 4000


@pytest.mark.parametrize(
    ("n", "mean", "std", "theta", "z", "expected"),
    [
        (0, 100.0, 50.0, 1000.0, P99_Z, 0.0),
        (0, 100.0, 50.0, 0.0, P99_Z, 0.0),
        (4, 100.0, 50.0, 100.0, 2.0, 6.0),  # (400 + 2*50*2) / 100
        (9, 200.0, 0.0, 300.0, 3.0, 6.0),
        (16, 100.0, 40.0, 50.0, 0.0, 32.0),
        (25, 10.0, 10.0, 10.0, 1.0, 30.0),  # (250 + 10*5) / 10
        (1, 10.0, 10.0, 0.0, 1.0, math.inf),
        (1, 10.0, 10.0, -5.0, 1.0, math.inf),
    ],
)
def test_bound_exact_cases(
    *, n: float, mean: float, std: float, theta: float, z: float, expected: float
) -> None:
    assert waiting_time_bound_s(n, mean, std, theta, z, mean_samples=INF) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("n", "mean", "std", "theta"),
    [(5, math.nan, 10.0, 100.0), (5, 10.0, math.nan, 100.0), (math.nan, 10.0, 1.0, 100.0)],
)
def test_bound_unknown_inputs_are_nan(n: float, mean: float, std: float, theta: float) -> None:
    assert math.isnan(waiting_time_bound_s(n, mean, std, theta, P99_Z, mean_samples=INF))


counts = st.integers(min_value=0, max_value=1_000_000)
means = st.floats(min_value=1.0, max_value=5000.0)
stds = st.floats(min_value=0.0, max_value=5000.0)
thetas = st.floats(min_value=1.0, max_value=1e6)
zs = st.floats(min_value=0.0, max_value=6.0)


@settings(max_examples=200, deadline=None)
@given(n1=counts, n2=counts, mean=means, std=stds, theta=thetas, z=zs)
def test_bound_monotone_in_queue_length(
    *, n1: int, n2: int, mean: float, std: float, theta: float, z: float
) -> None:
    low, high = sorted((n1, n2))
    assert waiting_time_bound_s(low, mean, std, theta, z, mean_samples=INF) <= (
        waiting_time_bound_s(high, mean, std, theta, z, mean_samples=INF)
    )


@settings(max_examples=200, deadline=None)
@given(n=counts, mean=means, std=stds, t1=thetas, t2=thetas, z=zs)
def test_bound_decreasing_in_throughput(
    *, n: int, mean: float, std: float, t1: float, t2: float, z: float
) -> None:
    slow, fast = sorted((t1, t2))
    assert waiting_time_bound_s(n, mean, std, fast, z, mean_samples=INF) <= (
        waiting_time_bound_s(n, mean, std, slow, z, mean_samples=INF)
    )


def test_bound_with_an_estimated_mean_by_hand() -> None:
    # n = 8, m = 64: sqrt(8 + 64/64) = 3, so 800 + 2*50*3 = 1100 tokens, 11 s at 100 tokens/s;
    # with the mean taken as exact it would be 800 + 2*50*sqrt(8) = 1082.8.
    assert queued_tokens_bound(8, 100.0, 50.0, 2.0, mean_samples=64) == pytest.approx(1100.0)
    assert waiting_time_bound_s(8, 100.0, 50.0, 100.0, 2.0, mean_samples=64) == pytest.approx(11.0)
    assert queued_tokens_bound(8, 100.0, 50.0, 2.0, mean_samples=INF) == pytest.approx(
        800 + 100 * math.sqrt(8)
    )


@pytest.mark.parametrize("samples", [math.nan, 0.0, -3.0])
def test_a_mean_of_no_samples_bounds_nothing(samples: float) -> None:
    assert math.isnan(queued_tokens_bound(8, 100.0, 50.0, 2.0, mean_samples=samples))
    assert math.isnan(waiting_time_bound_s(8, 100.0, 50.0, 100.0, 2.0, mean_samples=samples))
    assert queued_tokens_bound(0, 100.0, 50.0, 2.0, mean_samples=samples) == 0.0


sample_counts = st.floats(min_value=1.0, max_value=1e9)


@settings(max_examples=300, deadline=None)
@given(n=counts, mean=means, std=stds, z=zs, m1=sample_counts, m2=sample_counts)
def test_an_estimated_mean_only_widens_the_bound(
    *, n: int, mean: float, std: float, z: float, m1: float, m2: float
) -> None:
    # At least Chiron's bound, and shrinking towards it as the mean is learned from more.
    few, many = sorted((m1, m2))
    exact = queued_tokens_bound(n, mean, std, z, mean_samples=INF)
    widest = queued_tokens_bound(n, mean, std, z, mean_samples=few)
    narrower = queued_tokens_bound(n, mean, std, z, mean_samples=many)
    assert exact <= narrower * (1 + 1e-12) and narrower <= widest * (1 + 1e-12)
    # The gap is z*sigma*(sqrt(n + n^2/m) - sqrt(n)) <= z*sigma*n/sqrt(m): it vanishes as m grows.
    assert narrower - exact <= z * std * n / math.sqrt(many) * (1 + 1e-9) + 1e-6


def test_an_estimated_mean_keeps_the_bound_honest() -> None:
    # The mean and spread learned from 100 real requests, a backlog of 1000: the error of the
    # mean, times 1000, outweighs the backlog's own spread. Chiron's bound, which takes the mean
    # as exact, covers about 3 backlogs in 4; with the mean's error it is back near its 99%.
    # (Skewed lengths, arxiv's, need more samples: sigma's own estimate is low from few.)
    lengths = output_lengths("sharegpt")
    rng = np.random.default_rng(41)
    n, m, trials = 1000, 100, 2000
    covered = {100.0: 0, INF: 0}
    for _ in range(trials):
        learned = lengths[rng.integers(0, lengths.size, m)]
        mean, std = float(learned.mean()), float(learned.std(ddof=1))
        total = lengths[rng.integers(0, lengths.size, n)].sum()
        for samples in covered:
            bound = queued_tokens_bound(n, mean, std, P99_Z, mean_samples=samples)
            covered[samples] += int(total <= bound)
    assert covered[100.0] / trials >= 0.975, covered
    assert covered[INF] / trials <= 0.85, covered


def queue(
    *groups: tuple[float, int], mean: float = 100.0, std: float = 0.0, samples: float = INF
) -> BatchQueue:
    """Groups as (seconds from NOW_S to the deadline, queued requests)."""
    found = tuple(BatchGroup(NOW_S + d, n) for d, n in groups)
    return BatchQueue(found, mean, std, 1.0, output_tokens_samples=samples)


def test_assess_empty_queue() -> None:
    assert assess_batch(queue(), NOW_S, 100.0, P99_Z) == BatchAssessment(
        0.0, 0, 0, math.inf, 0.0, 0.0
    )


def test_assess_counts_earlier_deadlines_ahead() -> None:
    # 100 tokens per request at 100 tokens/s: one request per second. The later group (listed
    # first on purpose) waits for the 5 ahead of it too: 15 s against 12 s left.
    result = assess_batch(queue((12.0, 10), (10.0, 5)), NOW_S, 100.0, z=0.0)
    assert result.groups == 2
    assert result.groups_at_risk == 1
    assert result.backpressure_ratio == 0.5
    assert result.worst_slack_s == pytest.approx(-3.0)
    assert result.required_throughput_tokens_per_s == pytest.approx(1500.0 / 12.0)


def test_assess_equal_deadlines_wait_for_each_other() -> None:
    result = assess_batch(queue((10.0, 4), (10.0, 4)), NOW_S, 100.0, z=0.0)
    assert result.groups_at_risk == 0
    assert result.worst_slack_s == pytest.approx(2.0)  # both count all 8 requests
    assert result.required_throughput_tokens_per_s == pytest.approx(80.0)


def test_assess_includes_spread_term() -> None:
    # 4 requests, mean 100, std 50, z 2: 400 + 2*50*2 = 600 tokens in 6 s at 100 tokens/s.
    result = assess_batch(queue((10.0, 4), std=50.0), NOW_S, 100.0, z=2.0)
    assert result.worst_slack_s == pytest.approx(4.0)
    assert result.required_throughput_tokens_per_s == pytest.approx(60.0)


def test_assess_widens_by_the_error_of_the_mean() -> None:
    # 8 requests ahead, learned from 64: 1100 tokens (see the by-hand bound) in 11 s at 100/s.
    result = assess_batch(queue((12.0, 8), std=50.0, samples=64.0), NOW_S, 100.0, z=2.0)
    assert result.worst_slack_s == pytest.approx(1.0)
    assert result.required_throughput_tokens_per_s == pytest.approx(1100.0 / 12.0)


def test_assess_with_an_uncounted_mean_is_unknown() -> None:
    result = assess_batch(queue((12.0, 8), std=50.0, samples=math.nan), NOW_S, 100.0, z=2.0)
    assert math.isnan(result.backpressure_ratio)
    assert math.isnan(result.worst_slack_s)


def test_assess_overdue_group_needs_infinite_throughput() -> None:
    result = assess_batch(queue((-5.0, 2), (20.0, 8)), NOW_S, 1e9, z=0.0)
    assert result.groups_at_risk == 1
    assert math.isinf(result.required_throughput_tokens_per_s)
    assert result.open_required_throughput_tokens_per_s == pytest.approx(1000.0 / 20.0)


def test_assess_ignores_empty_groups() -> None:
    result = assess_batch(queue((-5.0, 0), (20.0, 8)), NOW_S, 100.0, z=0.0)
    assert (result.groups, result.groups_at_risk) == (1, 0)


def test_assess_no_throughput_puts_every_group_at_risk() -> None:
    result = assess_batch(queue((100.0, 1), (200.0, 1)), NOW_S, 0.0, z=0.0)
    assert result.backpressure_ratio == 1.0
    assert result.worst_slack_s == -math.inf


def test_assess_unknown_lengths_reports_nan() -> None:
    unknown = BatchQueue((BatchGroup(NOW_S - 1, 3), BatchGroup(NOW_S + 60, 3)))
    result = assess_batch(unknown, NOW_S, 100.0, P99_Z)
    assert math.isnan(result.backpressure_ratio)
    assert math.isnan(result.required_throughput_tokens_per_s)
    assert math.isnan(result.worst_slack_s)
    assert (result.groups, result.groups_at_risk) == (2, 1)  # the overdue one is late anyway


groups_st = st.lists(
    st.tuples(st.floats(min_value=1.0, max_value=1e5), st.integers(1, 10_000)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(groups=groups_st, mean=means, std=stds, z=zs)
def test_required_throughput_is_the_least_that_fits(
    groups: list[tuple[float, int]], mean: float, std: float, z: float
) -> None:
    q = queue(*groups, mean=mean, std=std)
    required = assess_batch(q, NOW_S, 1.0, z).required_throughput_tokens_per_s
    assert assess_batch(q, NOW_S, required * (1 + 1e-9), z).groups_at_risk == 0
    assert assess_batch(q, NOW_S, required * (1 - 1e-6), z).groups_at_risk >= 1


def output_lengths(name: str) -> np.ndarray:
    """Real output lengths, from the copies of the public data sets the package ships."""
    source: Literal["sharegpt", "arxiv"] = "sharegpt" if name == "sharegpt" else "arxiv"
    _, outputs = length_samples(source)
    return np.asarray(outputs, dtype=float)


def sample_queues(
    lengths: np.ndarray, rng: np.random.Generator, low: int, high: int
) -> tuple[np.ndarray, np.ndarray]:
    """Queue lengths in [low, high) and the true output tokens of each queue (i.i.d. draws)."""
    sizes = rng.integers(low, high, QUEUES_PER_BIN)
    totals = np.array([lengths[rng.integers(0, lengths.size, n)].sum() for n in sizes])
    return sizes, totals


def coverage_by_bin(name: str, seed: int) -> list[tuple[float, float]]:
    """Per bin: share of queues whose true wait the p99 bound covers, median relative slack."""
    lengths = output_lengths(name)
    mean, std = float(lengths.mean()), float(lengths.std())
    theta = 2000.0  # any throughput: it scales the true wait and the bound alike
    rng = np.random.default_rng(seed)
    results = []
    for low, high in N_BINS:
        sizes, totals = sample_queues(lengths, rng, low, high)
        bounds = np.array(
            [waiting_time_bound_s(n, mean, std, theta, P99_Z, mean_samples=INF) for n in sizes]
        )
        truth = totals / theta
        results.append((float(np.mean(truth <= bounds)), float(np.median(bounds / truth - 1))))
    return results


@pytest.mark.parametrize(("name", "seed"), [("sharegpt", 11), ("arxiv", 12)])
def test_bound_covers_real_output_lengths(name: str, seed: int) -> None:
    results = coverage_by_bin(name, seed)
    report = ", ".join(
        f"n in [{lo}, {hi}): {cov:.4f}" for (lo, hi), (cov, _) in zip(N_BINS, results, strict=True)
    )
    coverages = [cov for cov, _ in results]
    assert min(coverages[1:]) >= 0.98, f"{name} p99 coverage too low for n >= 50: {report}"
    # Skewed lengths (arxiv) under-cover small queues; the CLT pulls coverage up to nominal.
    assert coverages[-1] >= coverages[0] - 0.003, f"{name} coverage falls with n: {report}"
    assert abs(coverages[-1] - 0.99) <= 0.005, f"{name} large-n coverage off nominal: {report}"


@pytest.mark.parametrize(("name", "seed"), [("sharegpt", 21), ("arxiv", 22)])
def test_bound_tightens_with_queue_length(name: str, seed: int) -> None:
    slacks = [slack for _, slack in coverage_by_bin(name, seed)]
    assert all(a > b for a, b in itertools.pairwise(slacks)), (
        f"{name} median relative slack of the bound does not shrink with n: {slacks}"
    )
    margins = [
        queued_tokens_bound(n, 300.0, 250.0, P99_Z, mean_samples=INF) / (n * 300.0) - 1
        for n, _ in N_BINS
    ]
    assert margins == sorted(margins, reverse=True)
