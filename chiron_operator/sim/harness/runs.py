"""One benchmark run, and a process pool of them: the pieces the benchmark and the sweeps share.

A run is described by plain values (`RunRequest`: scenario path, quick, policy, seed), so a
worker process rebuilds scenario, workload and policy itself and results do not depend on how
many run at once. Workloads and oracles are cached per process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

from chiron_operator.core.enums import Role
from chiron_operator.sim.config import StepMode
from chiron_operator.sim.engine import SimResult, simulate
from chiron_operator.sim.harness.oracle import OracleResult, oracle
from chiron_operator.sim.harness.policies import (
    PolicySpec,
    setup,
)
from chiron_operator.sim.harness.report_goals import attainment
from chiron_operator.sim.records import Summary
from chiron_operator.sim.requests import RequestSpec
from chiron_operator.sim.scenario import (
    Scenario,
    build_config,
    build_workload,
    load_scenario,
    packaged_scenarios,
)
from chiron_operator.sim.sourcefile import UsageError

TARGET_ATTAINMENT: Final = 0.99
EVALUATION_SEED: Final = 0
TRAINING_SEED: Final = 1
SERIES_POINTS: Final = 240

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One run, in plain values a worker process can rebuild everything from."""

    scenario_path: str
    quick: bool
    policy: PolicySpec
    seed: int
    step_mode: StepMode = StepMode.FAST
    tag: str = ""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a worker sends back: the request, its metrics and a compact time series."""

    request: RunRequest
    metrics: dict[str, Any]
    series: dict[str, list[float]] = field(default_factory=dict)


@cache
def scenario_at(path: str, quick: bool) -> Scenario:
    """The (quick) scenario at `path`, parsed once per process."""
    return load_scenario(path).variant(quick=quick)


@cache
def workload_for(path: str, quick: bool, seed: int) -> tuple[RequestSpec, ...]:
    """The scenario's workload for `seed`, built once per process."""
    return tuple(build_workload(scenario_at(path, quick), seed))


def oracle_for(scenario: Scenario, workload: Sequence[RequestSpec]) -> OracleResult:
    """The oracle lower bound for a scenario's workload (see `oracle`)."""
    bounds = scenario.bounds()
    return oracle(
        workload,
        scenario.latency,
        itl_slo_s=scenario.pool.slo.interactive_itl_s,
        horizon_s=scenario.horizon_s,
        gpus_per_instance=scenario.tensor_parallel_size,
        floor_instances=max(1, sum(b.min_replicas for b in bounds.values())),
        max_batch_size_seqs=max(b.max_batch_size_seqs for b in bounds.values()),
        chunked_prefill=scenario.engine.chunked_prefill,
    )


def simulate_request(
    request: RunRequest, progress: Callable[[float], None] | None = None
) -> SimResult:
    """Run one request in this process."""
    chosen = setup(scenario_at(request.scenario_path, request.quick), request.policy)
    config = build_config(
        chosen.scenario,
        seed=request.seed,
        routing=chosen.routing,
        bounds=chosen.bounds,
        initial_replicas=chosen.initial_replicas,
        step_mode=request.step_mode,
    )
    workload = workload_for(request.scenario_path, request.quick, request.seed)
    return simulate(config, workload, chosen.policy, progress=progress)


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: unknown numbers become null."""
    return value if math.isfinite(value) else None


def summary_metrics(summary: Summary) -> dict[str, Any]:
    """The per-policy record of the bench JSON."""
    return {
        "interactive_slo_attainment": finite_or_none(summary.interactive_slo_attainment),
        "batch_deadline_attainment": finite_or_none(summary.batch_deadline_attainment),
        "gpu_hours": summary.gpu_hours,
        "scaling_actions": summary.scaling_actions,
        "restarts": summary.restarts,
        "pod_restarts": summary.pod_restarts,
        "throughput_requests_per_s": summary.throughput_requests_per_s,
        "throughput_tokens_per_s": summary.throughput_tokens_per_s,
        "interactive_ttft_p95_s": finite_or_none(summary.interactive_ttft_p95_s),
        "interactive_itl_p95_s": finite_or_none(summary.interactive_itl_p95_s),
        "longest_recovery_s": summary.longest_recovery_s,
        "violation_s": summary.violation_s,
        "preemptions": summary.preemptions,
        "requeues": summary.requeues,
        "requests": summary.requests,
        "completed": summary.completed,
        "dropped": dict(summary.dropped),
    }


def compact_series(result: SimResult, points: int = SERIES_POINTS) -> dict[str, list[float]]:
    """Instances (ready + starting, all roles) and arrival rate per tick, thinned to `points`."""
    ticks = result.ticks
    stride = max(1, math.ceil(len(ticks) / points))
    chosen = ticks[::stride]
    return {
        "time_s": [t.time_s for t in chosen],
        "instances": [float(sum(t.ready[r] + t.starting[r] for r in Role)) for t in chosen],
        "arrivals_per_s": [t.arrivals_per_s for t in chosen],
    }


def execute(request: RunRequest) -> RunOutcome:
    """Worker entry point: run and reduce to what the bench keeps."""
    result = simulate_request(request)
    metrics = summary_metrics(result.summary)
    metrics.update(
        wall_s=result.wall_s, events=result.events, seed=request.seed, policy=result.policy_name
    )
    return RunOutcome(request, metrics, compact_series(result))


def run_all(
    requests: Sequence[RunRequest], *, jobs: int = 1, progress: Progress | None = None
) -> list[RunOutcome]:
    """Run every request (in `jobs` processes when > 1); outcomes in request order."""
    if jobs <= 1 or len(requests) <= 1:
        outcomes = []
        for request in requests:
            outcomes.append(execute(request))
            if progress is not None:
                progress(_describe(request))
        return outcomes
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(execute, request) for request in requests]
        outcomes = []
        for request, future in zip(requests, futures, strict=True):
            outcomes.append(future.result())
            if progress is not None:
                progress(_describe(request))
        return outcomes


def _describe(request: RunRequest) -> str:
    name = Path(request.scenario_path).stem
    return f"{name}/{request.policy.label}{'/' + request.tag if request.tag else ''}"


def choose(rows: Sequence[Mapping[str, Any]], target: float = TARGET_ATTAINMENT) -> int:
    """Index of the row the selection rule picks (see the module docstring)."""
    if not rows:
        raise ValueError("nothing to choose from")

    def key(index: int) -> tuple[float, float]:
        row = rows[index]
        reached = attainment(row)
        if reached >= target:
            return (0.0, row["gpu_hours"])
        return (1.0 + (target - reached), row["gpu_hours"])

    return min(range(len(rows)), key=key)


def suite_paths(names: Iterable[str] | None = None) -> list[str]:
    """Scenario files of the suite: all packaged ones, or those named (a file, or the name of
    a packaged scenario)."""
    if names is None:
        return [str(p) for p in packaged_scenarios()]
    packaged = {p.stem: p for p in packaged_scenarios()}
    found = []
    for name in names:
        if Path(name).is_file():
            found.append(str(name))
        elif name in packaged:
            found.append(str(packaged[name]))
        else:
            known = ", ".join(sorted(packaged))
            raise UsageError(f"no scenario file or packaged scenario {name!r}; known: {known}")
    return found
