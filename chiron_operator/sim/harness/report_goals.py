"""The benchmark report's goals: each scenario's verdict against the issue's targets.

Attainment (the lower of a run's two classes), the cheapest baseline reaching a given
attainment, and one PASS/MISS row per goal and scenario, with by how much it misses. The goals
are Chiron's with its gateway (`chiron`); `chiron-services` is Chiron too, so it is never the
baseline Chiron is compared with. GPU-hours are judged against the hindsight reference
(`hindsight.reference`), and against the cheapest baseline at equal attainment: at most 0.6x
with batch work present, at most 1.0x without.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

GOAL_ATTAINMENT: Final = 0.99
GOAL_HINDSIGHT_RATIO: Final = 1.2
GOAL_BASELINE_RATIO_BATCH: Final = 0.6
GOAL_BASELINE_RATIO: Final = 1.0
GOAL_SIM_SPEED: Final = 50_000.0
CHIRON: Final = "chiron"
CHIRON_SERVICES: Final = "chiron-services"
NOT_BASELINES: Final = frozenset({CHIRON, CHIRON_SERVICES})
"""Chiron both ways (with its gateway and with plain Services): never a baseline."""
# Attainments equal to 4 decimals count as equal (the runs have thousands of requests).
_EQUAL_EPS: Final = 5e-5


def attainment(metrics: Mapping[str, Any]) -> float:
    """The lower of the run's interactive and batch attainments (absent classes ignored)."""
    values = [
        v
        for v in (metrics["interactive_slo_attainment"], metrics["batch_deadline_attainment"])
        if v is not None
    ]
    return min(values) if values else math.nan


def best_baseline_at(
    policies: Mapping[str, Mapping[str, Any]], reached: float, exclude: str
) -> tuple[str, float] | None:
    """The cheapest baseline (not `exclude`, not Chiron) whose attainment is at least
    `reached`."""
    candidates = [
        (metrics["gpu_hours"], name)
        for name, metrics in policies.items()
        if name != exclude
        and name not in NOT_BASELINES
        and attainment(metrics) >= reached - _EQUAL_EPS
    ]
    if not candidates:
        return None
    gpu_hours, name = min(candidates)
    return name, gpu_hours


def _closest_baseline(
    policies: Mapping[str, Mapping[str, Any]],
) -> tuple[str, float, float] | None:
    """The baseline with the highest attainment (fewer GPU-hours among equals)."""
    ranked = sorted(
        (-attainment(m), m["gpu_hours"], name)
        for name, m in policies.items()
        if name not in NOT_BASELINES
    )
    if not ranked:
        return None
    negative, gpu_hours, name = ranked[0]
    return name, -negative, gpu_hours


def pct(value: float | None) -> str:
    """A share as a percentage with two decimals ("n/a" when absent)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f}%"


@dataclass(frozen=True, slots=True)
class Goal:
    """One goal's verdict for one scenario."""

    scenario: str
    goal: str
    target: str
    measured: str
    met: bool | None  # None: not applicable
    gap: str


def goals(document: Mapping[str, Any]) -> list[Goal]:
    """Every goal of the issue, per scenario, with PASS/MISS and by how much."""
    found: list[Goal] = []
    for scenario in document["scenarios"]:
        name = scenario["name"]
        policies = scenario["policies"]
        chiron = policies[CHIRON]
        interactive = chiron["interactive_slo_attainment"]
        if interactive is not None:
            found.append(_at_least(name, "interactive SLO attainment", interactive))
        batch = chiron["batch_deadline_attainment"]
        if batch is not None:
            found.append(_at_least(name, "batch deadline attainment", batch))
        found.append(_against_hindsight(name, chiron, scenario["hindsight"]))
        found.append(_against_baselines(name, policies, with_batch=batch is not None))
    speed = document.get("sim_requests_per_wall_s") or 0.0
    met = speed >= GOAL_SIM_SPEED
    found.append(
        Goal(
            "all",
            "simulator speed (fast mode)",
            f">= {GOAL_SIM_SPEED:,.0f} req/s",
            f"{speed:,.0f} req/s",
            met,
            "" if met else f"{speed / GOAL_SIM_SPEED - 1:+.0%}",
        )
    )
    return found


def _at_least(scenario: str, goal: str, value: float) -> Goal:
    met = value >= GOAL_ATTAINMENT
    gap = "" if met else f"{100 * (GOAL_ATTAINMENT - value):.2f} points short"
    return Goal(scenario, goal, f">= {pct(GOAL_ATTAINMENT)}", pct(value), met, gap)


def _against_hindsight(
    scenario: str, chiron: Mapping[str, Any], hindsight: Mapping[str, Any]
) -> Goal:
    goal = "GPU-hours / hindsight reference"
    target = f"<= {GOAL_HINDSIGHT_RATIO:g}x"
    ratio = chiron["gpu_hours"] / hindsight["gpu_hours"]
    if not hindsight["reached_target"]:
        measured = f"{ratio:.2f}x (the reference itself misses {pct(GOAL_ATTAINMENT)})"
        return Goal(scenario, goal, target, measured, None, "")
    met = ratio <= GOAL_HINDSIGHT_RATIO
    gap = "" if met else f"{ratio / GOAL_HINDSIGHT_RATIO - 1:+.0%} over"
    return Goal(scenario, goal, target, f"{ratio:.2f}x ({hindsight['source']})", met, gap)


def _against_baselines(
    scenario: str, policies: Mapping[str, Mapping[str, Any]], *, with_batch: bool
) -> Goal:
    chiron = policies[CHIRON]
    reached = attainment(chiron)
    best = best_baseline_at(policies, reached, CHIRON)
    goal = "GPU-hours / best baseline at equal attainment"
    limit = GOAL_BASELINE_RATIO_BATCH if with_batch else GOAL_BASELINE_RATIO
    target = f"<= {limit:g}x"
    if best is None:
        closest = _closest_baseline(policies)
        if closest is None:
            return Goal(scenario, goal, target, "no baseline", None, "")
        name, attained, gpu_hours = closest
        ratio = chiron["gpu_hours"] / gpu_hours
        measured = (
            f"no baseline reaches {pct(reached)}; {ratio:.2f}x the closest ({name}, "
            f"{pct(attained)})"
        )
        met = True if ratio <= limit else None
        return Goal(scenario, goal, target, measured, met, "dominates" if ratio <= 1 else "")
    name, gpu_hours = best
    ratio = chiron["gpu_hours"] / gpu_hours
    met = ratio <= limit
    gap = "" if met else f"{ratio / limit - 1:+.0%} over"
    return Goal(scenario, goal, target, f"{ratio:.2f}x ({name})", met, gap)


def goals_table(document: Mapping[str, Any]) -> list[str]:
    """The goals as a Markdown table, one verdict per row."""
    lines = [
        "| scenario | goal | target | measured | verdict | by how much |",
        "|---|---|---|---|:---:|---|",
    ]
    for goal in goals(document):
        verdict = "n/a" if goal.met is None else ("PASS" if goal.met else "MISS")
        lines.append(
            f"| {goal.scenario} | {goal.goal} | {goal.target} | {goal.measured} | {verdict} "
            f"| {goal.gap} |"
        )
    return lines
