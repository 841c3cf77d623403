"""What a run leaves behind: per-request and per-tick records, and the summary metrics.

Definitions:

- TTFT = first token - arrival at the pool (pool-level queueing and re-queues included).
- ITL of a request = its mean gap between output tokens, (completion - first token) /
  (output tokens - 1), 0 for one-token outputs. This is TPOT: the per-request figure the SLO is
  checked on. vLLM's ITL histogram, which the controllers see, holds every single gap instead;
  the two differ in that stalls (a prefill iteration, a preemption) raise a request's mean by
  their share of its gaps rather than showing as one outlier.
- An interactive request meets its SLO when it completed with TTFT <= the TTFT target and mean
  ITL <= the ITL target; a batch request when it completed by its deadline. Dropped requests
  (including those unfinished at the horizon, and those the router refused: `refused:<reason>`
  from the gateway, `no_ready_endpoint` from a Service without a ready pod) miss.
- Recovery: interactive requests are grouped by arrival into windows of the control interval;
  a window is in violation when its SLO attainment is below the SLO percentile (e.g. 95 %).
  A violation episode runs from the start of its first violating window to the start of the
  next compliant one (or the horizon). `longest_recovery_s` is the longest episode (how long
  the pool took to recover after the worst burst), `violation_s` the sum of all episodes.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import is_, not_
from pathlib import Path
from typing import NamedTuple

import numpy as np

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.core.tuning import SloTargets
from chiron_operator.sim.live import LiveRequest

UNFINISHED = "unfinished"
"""Drop reason: still queued or running at the horizon."""
AFTER_HORIZON = "after_horizon"
"""Drop reason: the workload's arrival falls after the horizon."""
LOST = "lost"
"""Never a legitimate outcome: neither finished nor held anywhere (a simulator bug)."""
EXCEEDS_KV_CAPACITY = "exceeds_kv_capacity"
"""Drop reason: prompt + output tokens can never fit one pod's KV cache (vLLM rejects it)."""


class RequestRecord(NamedTuple):
    """One request's fate. Times are absolute seconds on the simulation clock; NaN = never.
    `dispatch_s` is the first hand-off to a pod; `deadline_s` is inf for interactive requests.
    `dropped_reason` is empty for completed requests (see the drop reasons above).

    A named tuple rather than a dataclass: runs build one per request, and tuples are several
    times cheaper to build (and convert straight to table rows)."""

    request_id: int
    request_class: RequestClass
    arrival_s: float
    dispatch_s: float
    first_token_s: float
    completion_s: float
    prompt_tokens: int
    output_tokens: int
    deadline_s: float
    ttft_s: float
    mean_itl_s: float
    met_slo: bool
    preemptions: int
    requeues: int
    dropped_reason: str

    @property
    def completed(self) -> bool:
        return not self.dropped_reason


def request_records(requests: Iterable[LiveRequest], slo: SloTargets) -> list[RequestRecord]:
    """Freeze finished (or dropped) requests into their records."""
    ttft_slo, itl_slo = slo.interactive_ttft_s, slo.interactive_itl_s
    # The tuple constructor itself: a NamedTuple's __new__ is a Python function, and this runs
    # once per request of the run.
    make = tuple.__new__
    records: list[RequestRecord] = []
    append = records.append
    for request in requests:
        ttft = request.first_token_s - request.arrival_s
        mean_itl = math.nan
        if request.completion_s == request.completion_s:  # not NaN
            gaps = request.output_tokens - 1
            mean_itl = (request.completion_s - request.first_token_s) / gaps if gaps else 0.0
        if request.drop_reason:
            met = False
        elif request.is_interactive:
            met = ttft <= ttft_slo and mean_itl <= itl_slo
        else:
            met = request.completion_s <= request.deadline_s
        append(
            make(
                RequestRecord,
                (
                    request.request_id,
                    request.request_class,
                    request.arrival_s,
                    request.dispatch_s,
                    request.first_token_s,
                    request.completion_s,
                    request.prompt_tokens,
                    request.output_tokens,
                    request.deadline_s,
                    ttft,
                    mean_itl,
                    met,
                    request.preemptions,
                    request.requeues,
                    request.drop_reason,
                ),
            )
        )
    return records


@dataclass(frozen=True, slots=True)
class TickRecord:
    """The pool at one control tick and what the policy decided there.

    `desired`/`max_num_seqs` are the decision's values, `targets` the local controller's
    target batch sizes (the gateway's caps under the ceiling); `ready`/`starting`/`running` the
    cluster's state when it was taken; `reasons` maps "<role>.replicas" and
    "<role>.max_num_seqs" to the decision's Reason values.
    """

    time_s: float
    arrivals_per_s: float
    in_system: int
    desired: Mapping[Role, int]
    ready: Mapping[Role, int]
    starting: Mapping[Role, int]
    max_num_seqs: Mapping[Role, int]
    running: Mapping[Role, int]
    pool_queue: int
    batch_queue: int
    waiting_on_pods: int
    observations: Mapping[str, float]
    reasons: Mapping[str, str]
    targets: Mapping[Role, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunCounters:
    """Counts the engine keeps while it runs."""

    horizon_s: float
    gpu_seconds: float
    scaling_actions: int
    restarts: int
    pod_restarts: int
    requeues: int
    window_s: float
    cut_offs: int = 0


@dataclass(frozen=True, slots=True)
class Summary:
    """The headline numbers of a run (attainments are ratios in [0, 1], NaN with no requests).

    `preemptions` are vLLM's own (KV pressure, or at the cap with `preempt_for_priority`),
    `requeues` the requests handed back by draining pods, `cut_offs` the batch requests the
    gateway cut off on a full mixed pod for an interactive one.
    """

    requests: int
    completed: int
    dropped: Mapping[str, int]
    interactive_requests: int
    interactive_slo_attainment: float
    interactive_ttft_p50_s: float
    interactive_ttft_p95_s: float
    interactive_itl_p50_s: float
    interactive_itl_p95_s: float
    batch_requests: int
    batch_deadline_attainment: float
    gpu_hours: float
    throughput_requests_per_s: float
    throughput_tokens_per_s: float
    scaling_actions: int
    restarts: int
    pod_restarts: int
    preemptions: int
    requeues: int
    violation_s: float
    longest_recovery_s: float
    cut_offs: int = 0


def _share(flags: np.ndarray) -> float:
    return float(flags.mean()) if flags.size else math.nan


def _percentile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else math.nan


def recovery_episodes(
    arrival_s: np.ndarray, met: np.ndarray, window_s: float, horizon_s: float, target: float
) -> list[float]:
    """Lengths of the SLO-violation episodes of interactive requests with these arrival times
    and SLO outcomes (see the module docstring)."""
    if not arrival_s.size:
        return []
    window = (arrival_s // window_s).astype(np.int64)
    counts = np.bincount(window)
    met_counts = np.bincount(window, weights=met.astype(np.float64))
    episodes: list[float] = []
    start: float | None = None
    for index in np.flatnonzero(counts):
        violating = met_counts[index] / counts[index] < target
        if violating and start is None:
            start = float(index) * window_s
        elif not violating and start is not None:
            episodes.append(float(index) * window_s - start)
            start = None
    if start is not None:
        episodes.append(max(0.0, horizon_s - start))
    return episodes


def summarise(records: Sequence[RequestRecord], counters: RunCounters, slo: SloTargets) -> Summary:
    """The run's summary from its request records and counters."""
    n = len(records)
    # One transposition in C, then every column from it: a run has ~10^5 records.
    fields = RequestRecord._fields
    column = dict(zip(fields, zip(*records, strict=True), strict=True)) if n else {}
    classes = column.get("request_class", ())
    interactive = np.fromiter(map(is_, classes, repeat(RequestClass.INTERACTIVE)), bool, n)
    reasons = column.get("dropped_reason", ())
    done = np.fromiter(map(not_, reasons), bool, n)
    met = np.fromiter(column.get("met_slo", ()), bool, n)
    ttft = np.fromiter(column.get("ttft_s", ()), float, n)[interactive]
    itl = np.fromiter(column.get("mean_itl_s", ()), float, n)[interactive]
    output = np.fromiter(column.get("output_tokens", ()), float, n)
    arrival = np.fromiter(column.get("arrival_s", ()), float, n)
    episodes = recovery_episodes(
        arrival[interactive],
        met[interactive],
        counters.window_s,
        counters.horizon_s,
        slo.percentile_ratio,
    )
    horizon = max(counters.horizon_s, 1e-9)
    return Summary(
        requests=len(records),
        completed=int(done.sum()),
        dropped=dict(Counter(filter(None, reasons))),
        interactive_requests=int(interactive.sum()),
        interactive_slo_attainment=_share(met[interactive]),
        interactive_ttft_p50_s=_percentile(ttft, 50),
        interactive_ttft_p95_s=_percentile(ttft, 95),
        interactive_itl_p50_s=_percentile(itl, 50),
        interactive_itl_p95_s=_percentile(itl, 95),
        batch_requests=int((~interactive).sum()),
        batch_deadline_attainment=_share(met[~interactive]),
        gpu_hours=counters.gpu_seconds / 3600.0,
        throughput_requests_per_s=float(done.sum()) / horizon,
        throughput_tokens_per_s=float(output[done].sum()) / horizon,
        scaling_actions=counters.scaling_actions,
        restarts=counters.restarts,
        pod_restarts=counters.pod_restarts,
        preemptions=sum(column.get("preemptions", ())),
        requeues=counters.requeues,
        violation_s=sum(episodes),
        longest_recovery_s=max(episodes, default=0.0),
        cut_offs=counters.cut_offs,
    )


# -- CSV output ---------------------------------------------------------------------------------


def write_requests_csv(records: Sequence[RequestRecord], path: Path) -> None:
    """One row per request, the record's fields as columns (NaN as empty)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RequestRecord._fields)
        for record in records:
            writer.writerow(_cell(value) for value in record)


_PER_ROLE = ("desired", "ready", "starting", "max_num_seqs", "running")


def tick_columns(ticks: Sequence[TickRecord]) -> list[str]:
    """Columns of the tick CSV: scalars, one per (field, role), then every observation and
    reason any tick has, in first-seen order."""
    columns = ["time_s", "arrivals_per_s", "in_system"]
    columns += [f"{name}.{role.value}" for name in _PER_ROLE for role in Role]
    columns += ["pool_queue", "batch_queue", "waiting_on_pods"]
    observations: dict[str, None] = {}
    reasons: dict[str, None] = {}
    for tick in ticks:
        observations.update(dict.fromkeys(tick.observations))
        reasons.update(dict.fromkeys(tick.reasons))
    columns += [f"obs.{name}" for name in observations]
    columns += [f"reason.{name}" for name in reasons]
    return columns


def tick_row(tick: TickRecord) -> dict[str, object]:
    """A tick as a flat mapping keyed like `tick_columns`."""
    row: dict[str, object] = {
        "time_s": tick.time_s,
        "arrivals_per_s": tick.arrivals_per_s,
        "in_system": tick.in_system,
        "pool_queue": tick.pool_queue,
        "batch_queue": tick.batch_queue,
        "waiting_on_pods": tick.waiting_on_pods,
    }
    for name in _PER_ROLE:
        values: Mapping[Role, int] = getattr(tick, name)
        for role in Role:
            row[f"{name}.{role.value}"] = values.get(role, 0)
    row.update({f"obs.{k}": v for k, v in tick.observations.items()})
    row.update({f"reason.{k}": v for k, v in tick.reasons.items()})
    return row


def write_ticks_csv(ticks: Sequence[TickRecord], path: Path) -> None:
    """One row per control tick (see `tick_columns`)."""
    columns = tick_columns(ticks)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for tick in ticks:
            row = tick_row(tick)
            writer.writerow(_cell(row.get(column, "")) for column in columns)


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value
