"""The hindsight static baseline: the fewest warm instances that reach the target, per scenario."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chiron_operator.core.enums import Role
from chiron_operator.sim.harness.policies import STATIC, PolicySpec, baseline_bounds
from chiron_operator.sim.harness.report_goals import attainment
from chiron_operator.sim.harness.runs import (
    TARGET_ATTAINMENT,
    Progress,
    RunOutcome,
    RunRequest,
    oracle_for,
    run_all,
    scenario_at,
    workload_for,
)


@dataclass(slots=True)
class _Bracket:
    """One scenario's search: the range the smallest count reaching the target lies in."""

    low: int  # the largest count known to miss (or below the range)
    high: int  # the smallest count known to reach the target (or untried max)
    reached: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, count: int, metrics: dict[str, Any]) -> None:
        """Narrow the bracket with one run's result."""
        self.rows.append({"replicas": count, **metrics})
        if attainment(metrics) >= TARGET_ATTAINMENT:
            if count <= self.high:
                self.high, self.reached = count, True
        elif count > self.low:
            self.low = count

    def summary(self, seed: int) -> dict[str, Any]:
        """The search record of the bench JSON."""
        return {
            "training_seed": seed,
            "rows": sorted(self.rows, key=lambda r: r["replicas"]),
            "chosen_replicas": self.high,
            "reached_target": self.reached,
        }


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
    brackets = {path: _initial_bracket(path, quick, seed) for path in paths}
    everything: list[RunOutcome] = []
    first = True
    while requests := _probe_requests(paths, brackets, quick, seed, probes, include_high=first):
        first = False
        outcomes = run_all(requests, jobs=jobs, progress=progress)
        everything += outcomes
        for o in outcomes:
            bracket = brackets[o.request.scenario_path]
            bracket.record(o.request.policy.static_replicas or 0, o.metrics)
        # A miss above a reach cannot happen unless attainment wobbles; then the reach wins.
        for bracket in brackets.values():
            bracket.low = min(bracket.low, bracket.high - 1)
    return {path: bracket.summary(seed) for path, bracket in brackets.items()}, everything


def _initial_bracket(path: str, quick: bool, seed: int) -> _Bracket:
    """From just below the oracle's peak (capped at the maximum) up to the baselines' maximum."""
    scenario = scenario_at(path, quick)
    peak = oracle_for(scenario, workload_for(path, quick, seed)).peak_instances
    maximum = baseline_bounds(scenario)[Role.MIXED].max_replicas
    return _Bracket(low=min(peak, maximum) - 1, high=maximum)


def _probe_requests(
    paths: Sequence[str],
    brackets: Mapping[str, _Bracket],
    quick: bool,
    seed: int,
    probes: int,
    *,
    include_high: bool,
) -> list[RunRequest]:
    """The next round's runs for every scenario still bracketing (none when all are done)."""
    requests = []
    for path in paths:
        bracket = brackets[path]
        counts = _probe_counts(bracket.low, bracket.high, probes, include_high=include_high)
        requests += [
            RunRequest(path, quick, PolicySpec(STATIC, static_replicas=n), seed, tag=str(n))
            for n in counts
        ]
    return requests


def _probe_counts(low: int, high: int, probes: int, *, include_high: bool) -> list[int]:
    """Counts strictly between `low` and `high` to try next (and `high` itself at first)."""
    inside = list(range(low + 1, high))
    if len(inside) > probes:
        step = len(inside) / (probes + 1)
        inside = sorted(
            {inside[min(len(inside) - 1, round(step * (i + 1)))] for i in range(probes)}
        )
    return [*inside, high] if include_high else inside
