"""The benchmark report's goals: each scenario's verdict against the issue's targets.

Attainment (the lower of a run's two classes), the cheapest baseline reaching a given
attainment, and one PASS/MISS row per goal and scenario, with by how much it misses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

GOAL_ATTAINMENT: Final = 0.99
GOAL_ORACLE_RATIO: Final = 1.2
GOAL_BASELINE_RATIO: Final = 0.6
GOAL_SIM_SPEED: Final = 50_000.0
CHIRON: Final = "chiron"
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
    """The cheapest baseline (not `exclude`) whose attainment is at least `reached`."""
    candidates = [
        (metrics["gpu_hours"], name)
        for name, metrics in policies.items()
        if name not in (exclude, CHIRON) and attainment(metrics) >= reached - _EQUAL_EPS
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
        (-attainment(m), m["gpu_hours"], name) for name, m in policies.items() if name != CHIRON
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
        ratio = chiron["gpu_hours"] / scenario["oracle_gpu_hours"]
        met = ratio <= GOAL_ORACLE_RATIO
        found.append(
            Goal(
                name,
                "GPU-hours / oracle",
                f"<= {GOAL_ORACLE_RATIO:g}x",
                f"{ratio:.2f}x",
                met,
                "" if met else f"{ratio / GOAL_ORACLE_RATIO - 1:+.0%} over",
            )
        )
        found.append(_against_baselines(name, policies))
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


def _against_baselines(scenario: str, policies: Mapping[str, Mapping[str, Any]]) -> Goal:
    chiron = policies[CHIRON]
    reached = attainment(chiron)
    best = best_baseline_at(policies, reached, CHIRON)
    goal = "GPU-hours / best baseline at equal attainment"
    target = f"<= {GOAL_BASELINE_RATIO:g}x"
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
        met = True if ratio <= GOAL_BASELINE_RATIO else None
        return Goal(scenario, goal, target, measured, met, "dominates" if ratio <= 1 else "")
    name, gpu_hours = best
    ratio = chiron["gpu_hours"] / gpu_hours
    met = ratio <= GOAL_BASELINE_RATIO
    gap = "" if met else f"{ratio / GOAL_BASELINE_RATIO - 1:+.0%} over"
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
