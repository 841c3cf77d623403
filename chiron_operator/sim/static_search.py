"""The hindsight static baseline: the fewest warm instances that reach the target, per scenario."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chiron_operator.core.enums import Role
from chiron_operator.sim.policies import STATIC, PolicySpec, baseline_bounds
from chiron_operator.sim.runs import (
    TARGET_ATTAINMENT,
    Progress,
    RunOutcome,
    RunRequest,
    attainment,
    oracle_for,
    run_all,
    scenario_at,
    workload_for,
)


def static_search(
    paths: Sequence[str],
    *,
    quick: bool,
    seed: int,
    jobs: int = 1,
    progress: Progress | None = None,
    probes: int = 4,
) -> tuple[dict[str, dict[str, Any]], list[RunOutcome]]:
    """Per scenario, the fewest static instances (warm from the start) reaching the target.

    Peak provisioning with hindsight: attainment grows with the count, so the smallest count
    that reaches the target is bracketed between the oracle's peak (below which no pool can
    serve the load) and the baselines' maximum, `probes` counts per round for every scenario
    at once. When even the maximum misses, the maximum is chosen. Returns each scenario's
    search record and every run made.
    """
    low: dict[str, int] = {}  # the largest count known to miss (or below the range)
    high: dict[str, int] = {}  # the smallest count known to reach the target (or untried max)
    reached: dict[str, bool] = {}
    rows: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
    for path in paths:
        scenario = scenario_at(path, quick)
        peak = oracle_for(scenario, workload_for(path, quick, seed)).peak_instances
        maximum = baseline_bounds(scenario)[Role.MIXED].max_replicas
        low[path], high[path], reached[path] = min(peak, maximum) - 1, maximum, False
    everything: list[RunOutcome] = []
    first = True
    while True:
        requests = []
        for path in paths:
            counts = _probe_counts(low[path], high[path], probes, include_high=first)
            requests += [
                RunRequest(path, quick, PolicySpec(STATIC, static_replicas=n), seed, tag=str(n))
                for n in counts
            ]
        first = False
        if not requests:
            break
        outcomes = run_all(requests, jobs=jobs, progress=progress)
        everything += outcomes
        for o in outcomes:
            path, count = o.request.scenario_path, o.request.policy.static_replicas or 0
            rows[path].append({"replicas": count, **o.metrics})
            if attainment(o.metrics) >= TARGET_ATTAINMENT:
                if count <= high[path]:
                    high[path], reached[path] = count, True
            elif count > low[path]:
                low[path] = count
        for path in paths:  # a miss above a reach cannot happen unless attainment wobbles
            low[path] = min(low[path], high[path] - 1)
    records = {
        path: {
            "training_seed": seed,
            "rows": sorted(rows[path], key=lambda r: r["replicas"]),
            "chosen_replicas": high[path],
            "reached_target": reached[path],
        }
        for path in paths
    }
    return records, everything


def _probe_counts(low: int, high: int, probes: int, *, include_high: bool) -> list[int]:
    """Counts strictly between `low` and `high` to try next (and `high` itself at first)."""
    inside = list(range(low + 1, high))
    if len(inside) > probes:
        step = len(inside) / (probes + 1)
        inside = sorted(
            {inside[min(len(inside) - 1, round(step * (i + 1)))] for i in range(probes)}
        )
    return [*inside, high] if include_high else inside
