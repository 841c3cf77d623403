"""Which override set a one-at-a-time sweep adopts: the best worst case, not the best mean.

A default that raises the mean by helping the traces it was swept on while hurting another is
exactly what an unseen trace punishes. So each set is scored by its **worst regret**: over every
run (scenario x seed), how far its attainment falls short of the best attainment any set of the
sweep reached on that run. A run no set can serve (the overload) weighs only by what some set
did better there, never by the absolute shortfall every set shares.

The rule: the sets whose worst regret is within `NOISE_ATTAINMENT` of the smallest are tied;
the tie is broken by **leximin** over the regrets: their second-worst are compared, then the
third, and so on (each set's regrets sorted from the worst down), and at each rank a set more
than `NOISE_ATTAINMENT` behind the best of the others still tied drops out. Among those left,
the defaults if they are there (a default changes only for a real gain), else the cheapest
(mean GPU-hours over the oracle), then the highest mean attainment.

Leximin was added after round 8 and before round 9 ran: there a set that matched the defaults'
worst run and did better on the runs behind it (the interactive role's largest batch at 64)
was not adopted, because the worst-regret rule alone read it as a tie and a tie keeps the
defaults. The worst case still decides first; the runs behind it only break its ties.

**Dominance.** When the rule keeps the defaults, or its pick's gain does not hold where no sweep
ran, a set that **dominates** the defaults is adopted instead: behind them by no more than
`NOISE_ATTAINMENT` on any run, ahead by more on at least one, for at most `DOMINANT_COST_RATIO`
times their mean GPU-hours over the oracle (the one ahead on the most runs, then the cheapest).
A default then changes only where it loses nothing anywhere. This was added after round 15,
where the interactive role's largest batch at 64 had tied the defaults' worst run in every round
since round 8 and was behind them on no run of round 15, while the worst-case rule only ever
weighed the runs where a capacity setting did better.

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
DOMINANT_COST_RATIO: Final = 1.02
"""How much more a dominating set may cost (mean GPU-hours over the oracle) than the defaults."""

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


def regrets(
    row: Row, best: Mapping[tuple[str, int], float], skip: str | None = None
) -> list[float]:
    """The set's shortfalls against the best on every run, worst first (`skip` left out)."""
    gaps = [best[_key(r)] - float(r["attainment"]) for r in row["runs"] if r["scenario"] != skip]
    return sorted(gaps, reverse=True)


def worst_regret(row: Row, best: Mapping[tuple[str, int], float], skip: str | None = None) -> float:
    """The set's largest shortfall against the best on any run (scenario `skip` left out)."""
    return max(regrets(row, best, skip), default=0.0)


def leximin(tied: Sequence[int], ranked: Mapping[int, Sequence[float]]) -> list[int]:
    """The sets of `tied` leximin keeps: rank by rank (regrets sorted worst first), those
    within `NOISE_ATTAINMENT` of the smallest regret at that rank among the sets still in."""
    left = list(tied)
    depth = max((len(ranked[i]) for i in left), default=0)
    for rank in range(depth):
        at_rank = {i: ranked[i][rank] if rank < len(ranked[i]) else 0.0 for i in left}
        smallest = min(at_rank.values())
        left = [i for i in left if at_rank[i] <= smallest + NOISE_ATTAINMENT]
        if len(left) == 1:
            break
    return left


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def adopt(rows: Sequence[Row], reference: int | None = 0, skip: str | None = None) -> int:
    """The index of the set the rule adopts (see the module docstring)."""
    valid = [i for i, row in enumerate(rows) if "invalid" not in row and row["runs"]]
    if not valid:
        return reference if reference is not None else 0
    best = best_per_run([rows[i] for i in valid], skip)
    ranked = {i: regrets(rows[i], best, skip) for i in valid}
    worst = {i: ranked[i][0] if ranked[i] else 0.0 for i in valid}
    smallest = min(worst.values())
    tied = leximin([i for i in valid if worst[i] <= smallest + NOISE_ATTAINMENT], ranked)
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


def dominant(rows: Sequence[Row], reference: int = 0) -> int | None:
    """The set that dominates the reference (see the module docstring), or None."""
    base = rows[reference]
    if "invalid" in base or not base["runs"]:
        return None
    theirs = {_key(r): float(r["attainment"]) for r in base["runs"]}
    base_cost = _mean([float(r["oracle_ratio"]) for r in base["runs"]])
    found: list[tuple[int, float, int]] = []
    for index, row in enumerate(rows):
        if index == reference or "invalid" in row or not row["runs"]:
            continue
        gaps = [float(r["attainment"]) - theirs[_key(r)] for r in row["runs"] if _key(r) in theirs]
        ahead = sum(1 for gap in gaps if gap > NOISE_ATTAINMENT)
        cost = _mean([float(r["oracle_ratio"]) for r in row["runs"]]) / max(base_cost, 1e-12)
        if ahead and min(gaps) >= -NOISE_ATTAINMENT and cost <= DOMINANT_COST_RATIO:
            found.append((-ahead, cost, index))
    return min(found)[2] if found else None
