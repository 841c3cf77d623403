"""Simulator speed, measured apart from the benchmark's parallel runs."""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from chiron_operator.sim.harness.policies import PolicySpec
from chiron_operator.sim.harness.runs import RunRequest, scenario_at, simulate_request, workload_for


def speed_probe(
    paths: Sequence[str], *, quick: bool, seed: int, repeats: int = 7
) -> dict[str, Any]:
    """Simulator speed, measured apart from the parallel runs (which share the cores).

    Chiron on the scenario with the most requests, `repeats` times one after the other in a
    fresh worker process of its own (fast mode), once every parallel run is over; the best
    run's simulated requests per wall second of the engine (`SimResult.wall_s`: the event loop
    and the records, not building the workload). The best of several is the least noisy
    estimate on a machine shared with other work; the load average says how shared it was.
    """
    path = max(paths, key=lambda p: len(workload_for(p, quick, seed)))
    request = RunRequest(path, quick, PolicySpec("chiron"), seed)
    load_before = _load_average()
    with ProcessPoolExecutor(max_workers=1) as pool:
        requests, events, walls = pool.submit(_timed_runs, request, repeats).result()
    best = min(walls)
    return {
        "scenario": scenario_at(path, quick).name,
        "policy": "chiron",
        "requests": requests,
        "events": events,
        "walls_s": walls,
        "requests_per_wall_s": requests / best,
        "median_requests_per_wall_s": requests / sorted(walls)[len(walls) // 2],
        "load_average_1m": [load_before, _load_average()],
        "method": f"best of {repeats} serial runs in one fresh worker process after the "
        "parallel runs; engine wall time (event loop and records), fast mode",
    }


def _timed_runs(request: RunRequest, repeats: int) -> tuple[int, int, list[float]]:
    """(requests, events, wall times) of `repeats` runs; the workload is built before."""
    workload_for(request.scenario_path, request.quick, request.seed)
    walls: list[float] = []
    requests = events = 0
    for _ in range(repeats):
        gc.collect()  # garbage of the previous run is not this run's cost
        result = simulate_request(request)
        walls.append(result.wall_s)
        requests, events = result.summary.requests, result.events
    return requests, events, walls


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None
