"""The batch benchmark's results and their JSON.

The Markdown document (`batch_report`) and the JSON are both rendered from these, so they say
the same thing; the numbers are never edited by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from chiron_operator.perf.batch_queue import QueueMemory

INTAKE_GOAL_S: Final = 30.0
MEMORY_GOAL_BYTES: Final = 300 * 1024 * 1024
INTAKE_GOAL_REQUESTS: Final = 50_000


@dataclass(frozen=True, slots=True)
class Setup:
    """What the run was: the machine and every knob, as the document states them."""

    cpu: str
    cores: int
    python: str
    niceness: int
    intake_requests: int
    dispatch_requests: int
    rounds: int
    concurrency: int
    line_bytes_min: int
    line_bytes_mean: float
    line_bytes_max: int
    poll_s: float
    postgres: str = ""  # the PostgreSQL server measured, if any: version and commit settings


@dataclass(frozen=True, slots=True)
class Intake:
    """One input file uploaded, made a batch and queued by a gateway whose pod takes nothing.
    Times in seconds from the client's side; memory of the gateway process from /proc."""

    store: str
    requests: int
    file_bytes: int
    upload_s: float  # `files.create`: sent, checked line by line, stored
    create_s: float  # `batches.create`
    to_in_progress_s: float  # from the create's answer until the batch reads in_progress
    to_queued_s: float  # from then until the gateway's queue holds every request
    total_s: float  # from the upload's start until every request is queued
    rss_idle_bytes: int
    rss_queued_bytes: int
    peak_after_upload_bytes: int
    peak_rss_bytes: int
    cpu_s: float  # the gateway's, upload to queued
    loop_cpu_s: float  # of which its event loop's thread
    queue: QueueMemory  # the queue's own Python objects, measured in-process

    @property
    def bytes_per_queued(self) -> float:
        """RSS growth over idle per queued request: an upper bound on the queue's cost."""
        return (self.rss_queued_bytes - self.rss_idle_bytes) / self.requests

    @property
    def time_met(self) -> bool:
        return self.total_s < INTAKE_GOAL_S

    @property
    def memory_met(self) -> bool:
        return self.peak_rss_bytes < MEMORY_GOAL_BYTES


@dataclass(frozen=True, slots=True)
class Direct:
    """One round of the baseline: the requests straight to the upstream by a plain client."""

    requests: int
    failed: int
    wall_s: float
    client_cpu_s: float
    upstream_cpu_s: float
    machine_cpu_s: float  # busy CPU seconds of the whole machine meanwhile

    @property
    def per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def machine_cores(self) -> float:
        return self.machine_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def others_cores(self) -> float:
        """What neither the client nor the upstream kept busy: other processes' load."""
        others_s = max(0.0, self.machine_cpu_s - self.client_cpu_s - self.upstream_cpu_s)
        return others_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def client_us_per_request(self) -> float:
        return 1e6 * self.client_cpu_s / self.requests

    @property
    def upstream_us_per_request(self) -> float:
        return 1e6 * self.upstream_cpu_s / self.requests


@dataclass(frozen=True, slots=True)
class BatchRound:
    """One batch through the gateway's Batch API to the same upstream.

    The *window* is the span of steady dispatch, between the first look at the gateway that saw
    a request answered and the one that saw all of them: its rate is the dispatch rate, free of
    the batch's validation before and its finalisation after."""

    requests: int
    completed: int
    failed: int
    batch_s: float  # from `batches.create` until the batch reads completed
    batch_cpu_s: float  # the gateway's over the same span
    window_s: float
    window_requests: int
    window_cpu_s: float
    window_loop_cpu_s: float  # of which its event loop's thread
    window_machine_cpu_s: float  # busy CPU seconds of the whole machine meanwhile
    window_others_cpu_s: float  # of which not the gateway's, the upstream's or the benchmark's
    upstream_cpu_s: float  # over the whole batch

    @property
    def per_s(self) -> float:
        return self.window_requests / self.window_s if self.window_s > 0 else 0.0

    @property
    def window_cores(self) -> float:
        """The gateway's CPU seconds per wall second in steady dispatch."""
        return self.window_cpu_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def window_machine_cores(self) -> float:
        return self.window_machine_cpu_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def window_others_cores(self) -> float:
        others_s = max(0.0, self.window_others_cpu_s)
        return others_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def us_per_request(self) -> float:
        """The gateway's CPU per request over the batch's whole life."""
        return 1e6 * self.batch_cpu_s / self.requests

    @property
    def window_us_per_request(self) -> float:
        return 1e6 * self.window_cpu_s / self.window_requests if self.window_requests else 0.0

    @property
    def window_loop_us_per_request(self) -> float:
        return 1e6 * self.window_loop_cpu_s / self.window_requests if self.window_requests else 0.0

    @property
    def window_threads_us_per_request(self) -> float:
        """The other threads' share: the store's worker, mostly."""
        return self.window_us_per_request - self.window_loop_us_per_request

    @property
    def upstream_us_per_request(self) -> float:
        return 1e6 * self.upstream_cpu_s / self.requests


R = TypeVar("R", Direct, BatchRound)


def pooled(rounds: Sequence[R]) -> R:
    """Rounds as one: every count and time summed, so rates come out over the total time."""
    return replace(
        rounds[0], **{f.name: sum(getattr(r, f.name) for r in rounds) for f in fields(rounds[0])}
    )


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One store's batches, round after round, and its per-request statements run alone."""

    store: str
    rounds: tuple[BatchRound, ...]
    store_calls_requests: int
    store_calls_cpu_s: float  # the store's two statements per request, run alone

    @property
    def total(self) -> BatchRound:
        return pooled(self.rounds)

    @property
    def store_us_per_request(self) -> float:
        return 1e6 * self.store_calls_cpu_s / self.store_calls_requests


@dataclass(frozen=True, slots=True)
class Results:
    """One whole run."""

    setup: Setup
    intakes: tuple[Intake, ...]
    directs: tuple[Direct, ...]  # a round before each batch round, on the same upstream
    dispatches: tuple[Dispatch, ...]
    wall_s: float
    when: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d"))

    @property
    def direct(self) -> Direct:
        """Every direct round as one."""
        return pooled(self.directs)


def to_json(results: Results) -> dict[str, Any]:
    """The JSON document next to the Markdown one (same numbers, derived values included)."""
    d = results.direct
    return {
        "when": results.when,
        "wall_s": results.wall_s,
        "setup": asdict(results.setup),
        "goals": {
            "intake_requests": INTAKE_GOAL_REQUESTS,
            "intake_s": INTAKE_GOAL_S,
            "rss_bytes": MEMORY_GOAL_BYTES,
        },
        "intakes": [
            asdict(i)
            | {
                "bytes_per_queued": i.bytes_per_queued,
                "queue_bytes_per_request": i.queue.bytes_per_request,
                "time_met": i.time_met,
                "memory_met": i.memory_met,
            }
            for i in results.intakes
        ],
        "direct": _direct_json(d) | {"rounds": [_direct_json(r) for r in results.directs]},
        "dispatches": [_dispatch_json(x, d) for x in results.dispatches],
    }


def _direct_json(d: Direct) -> dict[str, Any]:
    return asdict(d) | {
        "per_s": d.per_s,
        "machine_cores": d.machine_cores,
        "others_cores": d.others_cores,
        "client_us_per_request": d.client_us_per_request,
        "upstream_us_per_request": d.upstream_us_per_request,
    }


def _round_json(x: BatchRound) -> dict[str, Any]:
    return asdict(x) | {
        "per_s": x.per_s,
        "window_cores": x.window_cores,
        "window_machine_cores": x.window_machine_cores,
        "window_others_cores": x.window_others_cores,
        "us_per_request": x.us_per_request,
        "window_us_per_request": x.window_us_per_request,
        "window_loop_us_per_request": x.window_loop_us_per_request,
        "window_threads_us_per_request": x.window_threads_us_per_request,
        "upstream_us_per_request": x.upstream_us_per_request,
    }


def _dispatch_json(x: Dispatch, direct: Direct) -> dict[str, Any]:
    total = x.total
    return _round_json(total) | {
        "store": x.store,
        "per_s_ratio_to_direct": total.per_s / direct.per_s if direct.per_s > 0 else 0.0,
        "store_calls_requests": x.store_calls_requests,
        "store_calls_cpu_s": x.store_calls_cpu_s,
        "store_us_per_request": x.store_us_per_request,
        "rounds": [_round_json(r) for r in x.rounds],
    }
