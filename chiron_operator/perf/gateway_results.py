"""The gateway benchmark's results, built from its raw runs (`gateway_load`), and their JSON.

The Markdown document (`gateway_report`) and the JSON are both rendered from these, so they
say the same thing; the numbers are never edited by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

from chiron_operator.perf.gateway_load import OpenRun, Outcome, StreamRun
from chiron_operator.perf.gateway_rig import Usage

ADDED_P50_GOAL_MS: Final = 2.0
ADDED_P99_GOAL_MS: Final = 10.0
CHUNKS_GOAL: Final = 50_000.0
REACHED_RATIO: Final = 0.95  # a rate counts as reached when this share of it was really sent


@dataclass(frozen=True, slots=True)
class Setup:
    """What the run was: the machine and every knob, as the document states them."""

    cpu: str
    cores: int
    python: str
    niceness: int
    pods: int
    max_num_seqs: int
    latency_time_scale: float
    stream_time_scale: float
    max_tokens: int
    prompt_tokens: int
    duration_s: float
    rounds: int
    warmup_s: float
    stream_tokens: int
    stream_duration_s: float


@dataclass
class Pooled:
    """One path's runs at one rate, pooled over the rounds."""

    outcomes: list[Outcome] = field(default_factory=list)
    sent_span_s: float = 0.0
    sent_gaps: int = 0  # intervals between sends within a round, over `sent_span_s`
    most_in_flight: int = 0
    usage: Usage = field(default_factory=lambda: Usage(0.0, 0.0, 0.0, 0.0, 0.0))
    round_ttfts: list[list[float]] = field(default_factory=list)

    def add(self, run: OpenRun, usage: Usage) -> None:
        self.outcomes += run.outcomes
        self.round_ttfts.append([o.ttft_s for o in run.outcomes if o.ok])
        self.sent_span_s += run.last_sent_s - run.first_sent_s
        self.sent_gaps += max(0, len(run.outcomes) - 1)
        self.most_in_flight = max(self.most_in_flight, run.most_in_flight)
        self.usage = self.usage.plus(usage)


def _ms(values: Sequence[float], q: float) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.percentile(finite, q)) * 1000 if finite else math.nan


@dataclass(frozen=True, slots=True)
class PathResult:
    """Direct to the pods or through the gateway, at one rate."""

    path: str
    requests: int
    failed: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    sent_per_s: float
    most_in_flight: int
    cores: dict[str, float]
    # Each round's own percentiles: their spread shows how much the figures move with the
    # machine's other load over a run.
    rounds_ttft_p50_ms: tuple[float, ...] = ()
    rounds_ttft_p99_ms: tuple[float, ...] = ()

    @classmethod
    def of(cls, path: str, pooled: Pooled) -> PathResult:
        ok = [o for o in pooled.outcomes if o.ok]
        lags = [o.lag_s for o in pooled.outcomes]
        u = pooled.usage
        cores = {
            "gateway": u.cores(u.gateway_s),
            "pods": u.cores(u.pods_s),
            "generator": u.cores(u.generator_s),
            "others": u.cores(u.others_s),
        }
        span = pooled.sent_span_s
        return cls(
            path,
            len(pooled.outcomes),
            len(pooled.outcomes) - len(ok),
            _ms([o.ttft_s for o in ok], 50),
            _ms([o.ttft_s for o in ok], 99),
            _ms(lags, 50),
            _ms(lags, 99),
            max(lags, default=0.0) * 1000,
            pooled.sent_gaps / span if span > 0 else 0.0,
            pooled.most_in_flight,
            cores,
            tuple(_ms(ttfts, 50) for ttfts in pooled.round_ttfts),
            tuple(_ms(ttfts, 99) for ttfts in pooled.round_ttfts),
        )


@dataclass(frozen=True, slots=True)
class RateResult:
    """Both paths at one offered rate, and what the gateway queued or refused meanwhile."""

    rate: float
    direct: PathResult
    gateway: PathResult
    gateway_queued: int
    gateway_refused: int

    @property
    def added_p50_ms(self) -> float:
        return self.gateway.ttft_p50_ms - self.direct.ttft_p50_ms

    @property
    def added_p99_ms(self) -> float:
        return self.gateway.ttft_p99_ms - self.direct.ttft_p99_ms

    def added_by_round(self, q: int) -> list[float]:
        """The added p`q` (50 or 99) of each round, the same arrival times on both paths."""
        via = self.gateway.rounds_ttft_p50_ms if q == 50 else self.gateway.rounds_ttft_p99_ms
        direct = self.direct.rounds_ttft_p50_ms if q == 50 else self.direct.rounds_ttft_p99_ms
        return [g - d for g, d in zip(via, direct, strict=True)]

    @property
    def reached_per_s(self) -> float:
        """The rate both paths really received (the lower of the two)."""
        return min(self.direct.sent_per_s, self.gateway.sent_per_s)

    @property
    def reached(self) -> bool:
        return self.reached_per_s >= REACHED_RATIO * self.rate


@dataclass(frozen=True, slots=True)
class StreamResult:
    """Long streams through the gateway: server-sent events relayed per gateway CPU-second."""

    concurrency: int
    requests: int
    failed: int
    events: int
    reads: int
    wall_s: float
    gateway_cpu_s: float
    cores: dict[str, float]

    @classmethod
    def of(cls, concurrency: int, run: StreamRun, usage: Usage) -> StreamResult:
        cores = {"gateway": usage.cores(usage.gateway_s), "pods": usage.cores(usage.pods_s)}
        cores |= {
            "generator": usage.cores(usage.generator_s),
            "others": usage.cores(usage.others_s),
        }
        return cls(
            concurrency,
            run.requests,
            run.failed,
            run.events,
            run.reads,
            run.wall_s,
            usage.gateway_s,
            cores,
        )

    @property
    def chunks_per_cpu_s(self) -> float:
        return self.events / self.gateway_cpu_s if self.gateway_cpu_s > 0 else math.inf

    @property
    def events_per_read(self) -> float:
        return self.events / self.reads if self.reads else 0.0


def judged_stream(streams: Sequence[StreamResult]) -> StreamResult:
    """The stream load the goal is judged on: the one whose events arrived least coalesced
    (its cost per event is the cost per chunk; coalesced events are relayed in bulk)."""
    return min(streams, key=lambda s: s.events_per_read)


@dataclass(frozen=True, slots=True)
class Results:
    """One whole run."""

    setup: Setup
    rates: tuple[RateResult, ...]
    streams: tuple[StreamResult, ...]
    wall_s: float
    when: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d"))


def to_json(results: Results) -> dict[str, Any]:
    """The JSON document next to the Markdown one (same numbers, derived values included)."""
    judged = judged_stream(results.streams)
    return {
        "when": results.when,
        "wall_s": results.wall_s,
        "setup": asdict(results.setup),
        "goals": {
            "added_p50_ms": ADDED_P50_GOAL_MS,
            "added_p99_ms": ADDED_P99_GOAL_MS,
            "chunks_per_core_s": CHUNKS_GOAL,
        },
        "rates": [
            asdict(r)
            | {
                "added_p50_ms": r.added_p50_ms,
                "added_p99_ms": r.added_p99_ms,
                "added_p50_ms_by_round": r.added_by_round(50),
                "added_p99_ms_by_round": r.added_by_round(99),
                "reached_per_s": r.reached_per_s,
                "reached": r.reached,
            }
            for r in results.rates
        ],
        "streams": [
            asdict(s)
            | {"chunks_per_cpu_s": s.chunks_per_cpu_s, "events_per_read": s.events_per_read}
            for s in results.streams
        ],
        "chunks_per_core_s": judged.chunks_per_cpu_s,
    }
