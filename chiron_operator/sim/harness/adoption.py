"""Which override set a one-at-a-time sweep adopts: the best worst case, not the best mean.

A default that raises the mean by helping the traces it was swept on while hurting another is
exactly what an unseen trace punishes. So each set is scored by its **worst regret**: over every
run (scenario x seed), how far its attainment falls short of the best attainment any set of the
sweep reached on that run. A run no set can serve (the overload) weighs only by what some set
did better there, never by the absolute shortfall every set shares.

The rule: the sets whose worst regret is within `NOISE_ATTAINMENT` of the smallest are tied;
among them, the defaults if they are tied (a default changes only for a real gain), else the
cheapest (mean GPU-hours over the oracle), then the highest mean attainment.

**Leave-one-out.** For each scenario, the rule is applied to the sweep without that scenario's
runs (the regrets too are taken over the others only), and the chosen set's regret on the
scenario left out is recorded: a rule that picks a set which then fails the scenario it never
saw is tuning to the suite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

NOISE_ATTAINMENT: Final = 0.0025
"""Attainment differences below this (a quarter of a point) are read as seed noise."""

Row = Mapping[str, Any]


def _key(run: Mapping[str, Any]) -> tuple[str, int]:
    return str(run["scenario"]), int(run["seed"])


def best_per_run(rows: Sequence[Row], skip: str | None = None) -> dict[tuple[str, int], float]:
    """The best attainment any valid set reached on each run (scenario `skip` left out)."""
    best: dict[tuple[str, int], float] = {}
    for row in rows:
        for run in row["runs"]:
            if run["scenario"] == skip:
                continue
            key = _key(run)
            best[key] = max(best.get(key, 0.0), float(run["attainment"]))
    return best


def worst_regret(row: Row, best: Mapping[tuple[str, int], float], skip: str | None = None) -> float:
    """The set's largest shortfall against the best on any run (scenario `skip` left out)."""
    gaps = [best[_key(r)] - float(r["attainment"]) for r in row["runs"] if r["scenario"] != skip]
    return max(gaps, default=0.0)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def adopt(rows: Sequence[Row], reference: int | None = 0, skip: str | None = None) -> int:
    """The index of the set the rule adopts (see the module docstring)."""
    valid = [i for i, row in enumerate(rows) if "invalid" not in row and row["runs"]]
    if not valid:
        return reference if reference is not None else 0
    best = best_per_run([rows[i] for i in valid], skip)
    regrets = {i: worst_regret(rows[i], best, skip) for i in valid}
    smallest = min(regrets.values())
    tied = [i for i in valid if regrets[i] <= smallest + NOISE_ATTAINMENT]
    if reference in tied:
        return reference

    def cost(index: int) -> tuple[float, float]:
        runs = [r for r in rows[index]["runs"] if r["scenario"] != skip]
        ratio = _mean([float(r["oracle_ratio"]) for r in runs])
        return ratio, -_mean([float(r["attainment"]) for r in runs])

    return min(tied, key=cost)


def scores(rows: Sequence[Row]) -> list[float | None]:
    """Each set's worst regret over the whole sweep (None for a set the pool rejects)."""
    valid = [row for row in rows if "invalid" not in row and row["runs"]]
    best = best_per_run(valid)
    return [
        worst_regret(row, best) if "invalid" not in row and row["runs"] else None for row in rows
    ]


def leave_one_out(rows: Sequence[Row], reference: int | None = 0) -> list[dict[str, Any]]:
    """Per scenario: the set the rule adopts without it, and that set's regret on it."""
    scenarios = sorted({r["scenario"] for row in rows for r in row["runs"]})
    valid = [row for row in rows if "invalid" not in row and row["runs"]]
    best = best_per_run(valid)
    found = []
    for scenario in scenarios:
        chosen = adopt(rows, reference, skip=scenario)
        runs = [r for r in rows[chosen]["runs"] if r["scenario"] == scenario]
        regret = max((best[_key(r)] - float(r["attainment"]) for r in runs), default=0.0)
        found.append({"left_out": scenario, "chosen": chosen, "regret_on_left_out": regret})
    return found
