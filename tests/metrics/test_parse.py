"""The parse rules, as tables: shapes, absent, NaN, no traffic, ages, names, lengths, queue."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from chiron_operator.api.status import MetricNames
from chiron_operator.core.enums import Role
from chiron_operator.metrics.parse import (
    MalformedResultError,
    Sample,
    assemble,
    gateway_lengths,
    gateway_queue,
    histogram_mean_std,
    known,
    names_of,
    output_lengths,
    parse_vector,
    pod_metrics,
    pool_names,
    queue_groups,
)
from chiron_operator.metrics.promql import PoolQuery, PoolSelector, Signal
from chiron_operator.metrics.results import PodMetrics, QueuedGroup

NAN = math.nan
INF = math.inf
EVAL_S = 1_800_000_000.0


def raw(labels: Mapping[str, str], value: str, time_s: float = EVAL_S) -> dict[str, Any]:
    """One series as the HTTP API returns it."""
    return {"metric": dict(labels), "value": [time_s, value]}


def samples(*series: dict[str, Any]) -> tuple[Sample, ...]:
    return parse_vector(list(series))


def pod(name: str, part: str | None = None, **labels: str) -> dict[str, str]:
    found = {"pod": name, **labels}
    if part is not None:
        found["chiron_part"] = part
    return found


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


# --- shapes -------------------------------------------------------------------------------


def test_vector() -> None:
    parsed = parse_vector([raw({"pod": "a"}, "1.5", 10.0), raw({}, "NaN", 10.0)])
    assert [(dict(s.labels), s.value, s.time_s) for s in parsed[:1]] == [({"pod": "a"}, 1.5, 10.0)]
    assert math.isnan(parsed[1].value)


def test_scalar_is_one_unlabelled_sample() -> None:
    (only,) = parse_vector([10.0, "3"])
    assert (dict(only.labels), only.value, only.time_s) == ({}, 3.0, 10.0)


def test_empty_vector() -> None:
    assert parse_vector([]) == ()


@pytest.mark.parametrize(
    "result",
    [
        {"metric": {}, "value": [1, "2"]},  # an object, not a list
        [{"metric": {}, "values": [[1, "2"]]}],  # a matrix: range query
        [{"metric": {}, "value": [1]}],
        [{"metric": {}, "value": [1, "x"]}],
        [{"metric": [], "value": [1, "2"]}],
        ["not a sample"],
        "text",
        None,
    ],
)
def test_malformed(result: object) -> None:
    with pytest.raises(MalformedResultError):
        parse_vector(result)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.0, 1.0), (0.0, 0.0), (-2.0, -2.0), (NAN, NAN), (INF, NAN), (-INF, NAN)],
)
def test_known(value: float, expected: float) -> None:
    assert same(known(value), expected)


# --- pod signals --------------------------------------------------------------------------


def results(**by_signal: Sequence[dict[str, Any]]) -> dict[Signal, tuple[Sample, ...]]:
    found: dict[Signal, tuple[Sample, ...]] = {s: () for s in Signal if s is not Signal.BATCH_QUEUE}
    found.update({Signal(k): parse_vector(list(v)) for k, v in by_signal.items()})
    return found


ROLL = results(
    running=[
        raw(pod("a", "value"), "3"),
        raw(pod("a", "timestamp"), str(EVAL_S - 2.5)),
        raw(pod("a", "mean_itl"), "0.015"),
        raw(pod("b", "value"), "0"),
        raw(pod("b", "timestamp"), str(EVAL_S + 1.0)),  # a sample stamped in the future
        raw(pod("b", "mean_itl"), "NaN"),  # 0 / 0: ran nothing
        raw(pod("c", "mean_itl"), "+Inf"),  # x / 0: no token
        raw(pod("c", "value"), "1"),
    ],
    waiting=[raw(pod("a"), "2"), raw(pod("b"), "+Inf")],
    kv_cache=[
        raw(pod("a", "value:v1"), "0.5"),
        raw(pod("a", "value:legacy"), "0.9"),  # both exported: v1 wins
        raw(pod("b", "value:legacy"), "0.25"),
        raw(pod("c", "value:v1"), "0.1"),
    ],
    generation_tokens=[raw(pod("a"), "120.5"), raw(pod("b"), "0")],
    itl=[
        raw(pod("a", "quantile:v1"), "0.02"),
        raw(pod("a", "observations:v1"), "100"),
        raw(pod("b", "quantile:legacy"), "NaN"),
        raw(pod("b", "observations:legacy"), "0"),
        raw(pod("c", "quantile:legacy"), "0.03"),  # a vLLM between the two renames
        raw(pod("c", "observations:legacy"), "5"),
    ],
    ttft=[raw(pod("a", "quantile"), "0.4"), raw(pod("a", "observations"), "2")],
)

POD_TABLE = [
    # pod, field, expected
    ("a", "running_requests", 3.0),
    ("a", "waiting_requests", 2.0),
    ("a", "kv_cache_usage_ratio", 0.5),
    ("a", "generation_tokens_per_s", 120.5),
    ("a", "mean_itl_s", 0.015),  # the short range's ratio, as reported
    ("a", "itl_s", 0.02),
    ("a", "itl_observations_per_s", 100.0),
    ("a", "ttft_s", 0.4),
    ("a", "ttft_observations_per_s", 2.0),
    ("a", "sample_age_s", 2.5),
    ("a", "names", MetricNames.V1),
    # b: idle. Zero load is an observation; the quantile over no traffic is NaN.
    ("b", "running_requests", 0.0),
    ("b", "waiting_requests", NAN),  # +Inf from Prometheus
    ("b", "kv_cache_usage_ratio", 0.25),  # legacy fallback
    ("b", "generation_tokens_per_s", 0.0),
    ("b", "mean_itl_s", NAN),
    ("b", "itl_s", NAN),
    ("b", "itl_observations_per_s", 0.0),  # no traffic
    ("b", "ttft_s", NAN),
    ("b", "ttft_observations_per_s", NAN),  # no data
    ("b", "sample_age_s", 0.0),  # never negative
    ("b", "names", MetricNames.LEGACY),
    # c: partial. Absent from a query: NaN; no timestamp: age inf.
    ("c", "waiting_requests", NAN),
    ("c", "generation_tokens_per_s", NAN),
    ("c", "mean_itl_s", NAN),  # +Inf from Prometheus: unknown
    ("c", "itl_s", 0.03),
    ("c", "sample_age_s", INF),
    ("c", "names", MetricNames.MIXED),
]


@pytest.mark.parametrize(("name", "field", "expected"), POD_TABLE)
def test_pod_rules(name: str, field: str, expected: object) -> None:
    got = getattr(pod_metrics(ROLL, "pod")[name], field)
    if isinstance(expected, float):
        assert same(got, expected)
    else:
        assert got is expected


def test_pods_are_those_of_any_pod_query() -> None:
    assert sorted(pod_metrics(ROLL, "pod")) == ["a", "b", "c"]
    assert pod_metrics(results(), "pod") == {}


def test_pod_label_is_configurable() -> None:
    found = pod_metrics(results(waiting=[raw({"pod_name": "a"}, "4")]), "pod_name")
    assert found["a"].waiting_requests == 4.0


@pytest.mark.parametrize(
    ("generations", "expected"),
    [
        ([], None),
        ([MetricNames.V1, MetricNames.V1], MetricNames.V1),
        ([MetricNames.LEGACY], MetricNames.LEGACY),
        ([MetricNames.V1, MetricNames.LEGACY], MetricNames.MIXED),
        ([MetricNames.V1, MetricNames.MIXED], MetricNames.MIXED),
    ],
)
def test_names_of(generations: list[MetricNames], expected: MetricNames | None) -> None:
    assert names_of(generations) is expected


def test_pool_names_count_fresh_pods_only() -> None:
    pods = {
        "new": PodMetrics(sample_age_s=1.0, names=MetricNames.V1),
        "gone": PodMetrics(sample_age_s=INF, names=MetricNames.LEGACY),  # rates linger
        "blank": PodMetrics(sample_age_s=1.0),
    }
    assert pool_names(pods) is MetricNames.V1
    assert pool_names({}) is None


# --- output lengths -------------------------------------------------------------------------

LENGTH_TABLE = [
    # cumulative (le -> rate), sum rate, mean, std
    ({INF: 0.0}, 0.0, NAN, NAN),  # no completions
    ({10.0: 1.0}, 5.0, NAN, NAN),  # no +Inf bucket: unusable
    ({10.0: 4.0, INF: 4.0}, NAN, NAN, NAN),  # no sum
    # uniform in (0, 10]: mean exact, spread 10 / sqrt(12)
    ({10.0: 4.0, INF: 4.0}, 20.0, 5.0, math.sqrt(100 / 12)),
    # everything above the last bound: its mean is what the sum leaves, no spread seen
    ({200.0: 0.0, INF: 32.0}, 7040.0, 220.0, 0.0),
    # two buckets, bucket means 5 and 15: between 5^2, within 10^2/12
    ({10.0: 2.0, 20.0: 4.0, INF: 4.0}, 40.0, 10.0, math.sqrt(25 + 100 / 12)),
    # rates that undershoot a neighbour are clamped, never a negative count
    ({10.0: 5.0, 20.0: 4.9, INF: 5.0}, 25.0, 5.0, math.sqrt(100 / 12)),
]


@pytest.mark.parametrize(("cumulative", "total", "mean", "std"), LENGTH_TABLE)
def test_histogram_mean_std(
    cumulative: dict[float, float], total: float, mean: float, std: float
) -> None:
    got_mean, got_std = histogram_mean_std(cumulative, total)
    assert same(got_mean, mean)
    assert same(got_std, std)


def test_open_bucket_mean_is_at_least_its_bound() -> None:
    # 1 in (5, 10], 24 in (100, 200], 32 above: the sum leaves 197.5 each for the open bucket,
    # below its bound 200, so 200 is used; the mean stays the exact 9928 / 57.
    cumulative = {5.0: 0.0, 10.0: 1.0, 100.0: 1.0, 200.0: 25.0, INF: 57.0}
    mean, std = histogram_mean_std(cumulative, 9928.0)
    assert mean == pytest.approx(9928 / 57)
    center = (7.5 + 24 * 150 + 32 * 200) / 57
    within = (25 / 12 + 24 * 10000 / 12) / 57
    between = ((7.5 - center) ** 2 + 24 * (150 - center) ** 2 + 32 * (200 - center) ** 2) / 57
    assert std == pytest.approx(math.sqrt(within + between))


def test_output_lengths_by_role() -> None:
    found = output_lengths(
        samples(
            raw({"chiron_role": "batch", "chiron_part": "bucket", "le": "10"}, "4"),
            raw({"chiron_role": "batch", "chiron_part": "bucket", "le": "+Inf"}, "4"),
            raw({"chiron_role": "batch", "chiron_part": "sum"}, "20"),
            raw({"chiron_role": "mixed", "chiron_part": "bucket", "le": "+Inf"}, "0"),
            raw({"chiron_role": "mixed", "chiron_part": "sum"}, "0"),
            raw({"chiron_role": "gateway", "chiron_part": "bucket", "le": "+Inf"}, "9"),
            raw({"chiron_role": "batch", "chiron_part": "bucket", "le": "x"}, "9"),
        ),
        600.0,
    )
    assert set(found) == {Role.BATCH, Role.MIXED}
    batch = found[Role.BATCH]
    assert (batch.requests_per_s, batch.mean) == (4.0, 5.0)
    assert batch.completed_requests == 2400.0  # 4 per second over the 600 s window
    assert batch.std == pytest.approx(math.sqrt(100 / 12))
    assert found[Role.MIXED].requests_per_s == 0.0
    assert math.isnan(found[Role.MIXED].mean)


def gateway_parts(count: str, total: str, squares: str) -> tuple[Sample, ...]:
    return samples(
        raw({"chiron_part": "observations"}, count),
        raw({"chiron_part": "sum"}, total),
        raw({"chiron_part": "squares"}, squares),
        raw({"chiron_part": "queue", "deadline": "120"}, "7"),  # the queue's parts: ignored
        raw({"chiron_part": "timestamp"}, str(EVAL_S)),
    )


GATEWAY_LENGTH_TABLE = [
    # count, sum, sum of squares -> mean, std (sample std, n - 1)
    # 100, 200, 300: mean 200, squares 140000, variance (140000 - 3 * 200^2) / 2 = 10000
    ("3", "600", "140000", 200.0, 100.0),
    # increase() extrapolates all three by one factor (here 1.1): the moments do not move,
    # and the sample correction sees 3.3 requests: the second moment about the mean, 20000 / 3,
    # times 3.3 / 2.3
    ("3.3", "660", "154000", 200.0, math.sqrt(20000 / 3 * 3.3 / 2.3)),
    ("2", "440", "96800", 220.0, 0.0),  # equal lengths: no spread
    ("2", "440", "96799.99999", 220.0, 0.0),  # rounding below zero: no spread, not NaN
    ("1", "220", "48400", 220.0, NAN),  # one request shows no spread
    ("0", "0", "0", NAN, NAN),  # nothing completed
    ("NaN", "0", "0", NAN, NAN),
    ("4", "800", "NaN", 200.0, NAN),  # squares unknown: spread unknown, never 0
]


@pytest.mark.parametrize(("count", "total", "squares", "mean", "std"), GATEWAY_LENGTH_TABLE)
def test_gateway_lengths_are_exact_moments(
    count: str, total: str, squares: str, mean: float, std: float
) -> None:
    found = gateway_lengths(gateway_parts(count, total, squares), 600.0)
    assert same(found.mean, mean)
    assert same(found.std, std)
    assert same(found.completed_requests, float(count))
    assert same(found.requests_per_s, float(count) / 600.0)


def test_gateway_lengths_absent_are_unknown() -> None:
    found = gateway_lengths((), 600.0)
    assert math.isnan(found.mean) and math.isnan(found.std)
    assert math.isnan(found.completed_requests)


def test_gateway_queue_groups_and_age() -> None:
    found = gateway_queue(
        samples(
            raw({"chiron_part": "queue", "deadline": "1900000120"}, "7"),
            raw({"chiron_part": "queue", "deadline": "1900000060"}, "2"),
            raw({"chiron_part": "queue", "deadline": "+Inf"}, "1"),  # no deadline: the default
            raw({"chiron_part": "timestamp"}, str(EVAL_S - 4.0)),
            raw({"chiron_part": "observations"}, "9"),  # the lengths' parts: not queued work
        )
    )
    assert found.groups == (
        QueuedGroup(1900000060.0, 2),
        QueuedGroup(1900000120.0, 7),
        QueuedGroup(None, 1),
    )
    assert (found.sample_age_s, found.error) == (4.0, "")


def test_gateway_without_a_sample_is_an_unknown_queue_not_an_empty_one() -> None:
    # No queue series is an empty queue only if the gateway was scraped at all.
    scraped = gateway_queue(samples(raw({"chiron_part": "timestamp"}, str(EVAL_S - 1.0))))
    assert (scraped.groups, scraped.sample_age_s) == ((), 1.0)
    assert gateway_queue(()).sample_age_s == INF


# --- batch queue ----------------------------------------------------------------------------

QUEUE_TABLE = [
    # (labels, value) series -> groups
    ([], ()),
    ([({"deadline": "200"}, "3"), ({"deadline": "100"}, "2")], ((100.0, 2), (200.0, 3))),
    ([({"deadline": "100"}, "2"), ({"deadline": "100.0"}, "5")], ((100.0, 7),)),  # merged
    ([({"deadline": "100"}, "2.2")], ((100.0, 3),)),  # fractional rounds up
    (
        [({"deadline": "100"}, "0"), ({"deadline": "100"}, "-1"), ({"deadline": "100"}, "NaN")],
        (),
    ),  # nothing known to be queued
    ([({"deadline": "+Inf"}, "1"), ({}, "2"), ({"deadline": "soon"}, "3")], ((None, 6),)),
    ([({}, "4"), ({"deadline": "50"}, "1")], ((50.0, 1), (None, 4))),  # unlabelled last
]


@pytest.mark.parametrize(("series", "expected"), QUEUE_TABLE)
def test_queue_groups(
    series: list[tuple[dict[str, str], str]], expected: tuple[tuple[float | None, int], ...]
) -> None:
    found = queue_groups(samples(*(raw(labels, value) for labels, value in series)), "deadline")
    assert found == tuple(QueuedGroup(d, n) for d, n in expected)


def test_queue_deadline_label_is_configurable() -> None:
    found = queue_groups(samples(raw({"due": "100", "deadline": "5"}, "1")), "due")
    assert found == (QueuedGroup(100.0, 1),)


# --- assembly -------------------------------------------------------------------------------


def query(queue: str | None, *, gateway: bool = False) -> PoolQuery:
    return PoolQuery(
        PoolSelector("ns", "pool"), 60.0, 0.95, 60.0, queue_query=queue, gateway=gateway
    )


def test_assemble_without_queue() -> None:
    found = assemble(ROLL, query(None), queries=7, fetched_at_s=5.0)
    assert found.queue is None
    assert (found.queries, found.fetched_at_s, found.error) == (7, 5.0, "")
    # a's v1 + b's legacy (c has no current sample and does not count)
    assert found.metric_names is MetricNames.MIXED


def test_assemble_queue_series_never_add_pods() -> None:
    by_signal = dict(ROLL)
    by_signal[Signal.BATCH_QUEUE] = samples(raw({"pod": "queue-0", "deadline": "9"}, "4"))
    found = assemble(by_signal, query("q"), queries=8, fetched_at_s=5.0)
    assert "queue-0" not in found.pods
    assert found.queue is not None
    assert found.queue.groups == (QueuedGroup(9.0, 4),)


def test_assemble_failed_queue() -> None:
    found = assemble(ROLL, query("q"), queries=8, fetched_at_s=5.0, queue_error="boom")
    assert found.queue is not None
    assert (found.queue.groups, found.queue.error) == ((), "boom")
    assert found.error == ""
    assert found.pods["a"].running_requests == 3.0


def test_assemble_gateway_batch() -> None:
    by_signal = dict(ROLL)
    by_signal[Signal.OUTPUT_LENGTH] = samples(  # not issued with a gateway; ignored if present
        raw({"chiron_role": "batch", "chiron_part": "bucket", "le": "+Inf"}, "4"),
        raw({"chiron_role": "batch", "chiron_part": "sum"}, "20"),
    )
    by_signal[Signal.GATEWAY_BATCH] = gateway_parts("3", "600", "140000")
    found = assemble(by_signal, query(None, gateway=True), queries=7, fetched_at_s=5.0)
    assert found.queue is not None
    assert (found.queue.groups, found.queue.sample_age_s) == ((QueuedGroup(120.0, 7),), 0.0)
    assert found.gateway_lengths is not None
    assert (found.gateway_lengths.mean, found.gateway_lengths.std) == (200.0, 100.0)
    assert found.gateway_lengths.requests_per_s == 3 / 60.0
    assert found.pods["a"].running_requests == 3.0


def test_assemble_user_queue_wins_over_the_gateway() -> None:
    by_signal = dict(ROLL)
    by_signal[Signal.BATCH_QUEUE] = samples(raw({"deadline": "9"}, "4"))
    found = assemble(by_signal, query("q", gateway=True), queries=8, fetched_at_s=5.0)
    assert found.queue is not None and found.queue.groups == (QueuedGroup(9.0, 4),)
    assert found.gateway_lengths is None
