"""The simulator's observer: the mean ITL it reports over the newest scrapes (`itl_window_s`).

A stub pod stands in for an `Instance` (the observer reads only its scrape surface), so the
samples are known exactly: 4 sequences at 20 ms per iteration (200 tokens/s), stepping at
t = 100 s to 32 sequences at 40 ms (800 tokens/s), scraped every second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from chiron_operator.control.pool_view import mean_itl_s
from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import PodSignals
from chiron_operator.sim.instance import InstanceState
from chiron_operator.sim.observe import Observer
from chiron_operator.sim.podmetrics import OutputLengthStats, PodCounters

STEP_S = 100.0
WINDOW_S = 60.0
BEFORE = (4, 200)  # (running sequences, tokens per second)
AFTER = (32, 800)


@dataclass
class StubPod:
    """What `Observer.scrape` and `Observer.snapshot` read of an `Instance`."""

    name: str = "mixed-0"
    role: Role = Role.MIXED
    max_num_seqs: int = 32
    state: InstanceState = InstanceState.READY
    counters: PodCounters = field(default_factory=PodCounters)
    n_running: int = 0
    n_waiting: int = 0

    def interactive_counts(self) -> tuple[int, int]:
        return self.n_running, self.n_waiting

    def kv_usage_ratio(self) -> float:
        return 0.5


@dataclass
class StubCluster:
    pod: StubPod

    @property
    def members(self) -> dict[Role, list[StubPod]]:
        return {role: [self.pod] if role is self.pod.role else [] for role in Role}

    @property
    def max_num_seqs(self) -> dict[Role, int]:
        return dict.fromkeys(Role, self.pod.max_num_seqs)

    def surge_pods(self, _role: Role) -> list[StubPod]:
        return []


def observed(until_s: float, now_s: float, delay_s: float = 0.0) -> PodSignals:
    """Scrape the stepping pod every second from 0 to `until_s`; the pod as seen at `now_s`."""
    observer = Observer(
        scrape_interval_s=1.0,
        scrape_delay_s=delay_s,
        window_s=WINDOW_S,
        quantile=0.95,
        expose_class_split=False,
    )
    pod = StubPod()
    for second in range(round(until_s) + 1):
        if second > 0:  # the tokens of the second that just ended, at the load it ran
            pod.counters.generation_tokens += (BEFORE if second <= STEP_S else AFTER)[1]
        pod.n_running = (BEFORE if second < STEP_S else AFTER)[0]
        observer.scrape(float(second), [cast(Any, pod)], {}, OutputLengthStats())
    snapshot = observer.snapshot(now_s, cast(Any, StubCluster(pod)))
    return snapshot.role(Role.MIXED).pods[0]


def test_mean_itl_spans_the_newest_two_scrapes_at_a_load_step() -> None:
    pod = observed(STEP_S + 10.0, STEP_S + 10.0)
    # The window's rate: its base is the sample at 50 s, 50 s at 200 tokens/s and 10 s at 800.
    assert pod.generation_tokens_per_s == pytest.approx((50 * 200 + 10 * 800) / 60)
    assert pod.running_requests == 32
    # Mean ITL over (108, 110]: samples at 109 and 110, both at 32 sequences and 800 tokens/s:
    # the 40 ms the pod has now. The newest gauge over the window's rate read 107 ms, over a
    # 100 ms SLO the pod never came near.
    assert pod.mean_itl_s == pytest.approx(0.04)
    assert mean_itl_s(pod) == pytest.approx(0.04)
    assert pod.running_requests / pod.generation_tokens_per_s == pytest.approx(0.1067, abs=5e-4)


def test_a_scrape_at_the_step_reads_the_two_samples_mean_once() -> None:
    # At 100 s the gauge reads 32 while the second's tokens came at 4 sequences: 18 / 200.
    assert observed(STEP_S, STEP_S).mean_itl_s == pytest.approx(0.09)
    assert observed(STEP_S + 1.0, STEP_S + 1.0).mean_itl_s == pytest.approx(0.04)


def test_steady_state_mean_itl_is_the_gauge_over_the_rate() -> None:
    pod = observed(STEP_S + 70.0, STEP_S + 70.0)
    assert pod.mean_itl_s == pytest.approx(32 / 800)
    assert mean_itl_s(pod) == pytest.approx(0.04)


def test_scrape_delay_shifts_the_range() -> None:
    delayed = observed(STEP_S + 15.0, STEP_S + 15.0, delay_s=5.0)
    # Samples become visible 5 s late: the newest is 110 s, as in the undelayed case.
    assert delayed.sample_age_s == pytest.approx(5.0)
    assert delayed.mean_itl_s == pytest.approx(0.04)
    assert delayed.generation_tokens_per_s == pytest.approx(300.0)


def test_a_single_sample_has_no_mean_itl() -> None:
    pod = observed(0.0, 0.0)
    assert math.isnan(pod.mean_itl_s)
    assert math.isnan(pod.generation_tokens_per_s)
    assert math.isnan(mean_itl_s(pod))


def test_short_history_reads_the_newest_two_scrapes() -> None:
    pod = observed(10.0, 10.0)
    assert pod.mean_itl_s == pytest.approx(0.02)
    assert pod.generation_tokens_per_s == pytest.approx(200.0)
    assert mean_itl_s(pod) == pytest.approx(0.02)


def test_batch_queue_carries_how_many_requests_its_lengths_were_learned_from() -> None:
    observer = Observer(
        scrape_interval_s=1.0,
        scrape_delay_s=0.0,
        window_s=WINDOW_S,
        quantile=0.95,
        expose_class_split=False,
    )
    pod = StubPod()
    lengths = OutputLengthStats()
    observer.scrape(0.0, [cast(Any, pod)], {60.0: 3}, lengths)
    # Nothing completed yet: no mean, and the count reads as unknown (inf), never as 0.
    before = observer.snapshot(0.0, cast(Any, StubCluster(pod))).batch_queue
    assert math.isnan(before.output_tokens_mean)
    assert before.output_tokens_samples == math.inf
    for tokens in (100, 200, 300):
        lengths.add(tokens)
    observer.scrape(1.0, [cast(Any, pod)], {60.0: 3}, lengths)
    after = observer.snapshot(1.0, cast(Any, StubCluster(pod))).batch_queue
    assert (after.output_tokens_mean, after.output_tokens_std) == (200.0, 100.0)
    assert after.output_tokens_samples == 3.0
