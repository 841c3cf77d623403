"""Sweeps of Chiron's tunables: one at a time or a grid, over the suite and training seeds.

Each configuration runs every scenario on every seed; the rows record attainment and GPU-hours
over the oracle, and `best` names the row the adoption rule prefers (see `adoption`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chiron_operator.sim.harness.adoption import adopt, dominant, leave_one_out, scores
from chiron_operator.sim.harness.oracle import OracleResult
from chiron_operator.sim.harness.policies import PolicySpec, with_overrides
from chiron_operator.sim.harness.report_goals import attainment
from chiron_operator.sim.harness.runs import (
    TARGET_ATTAINMENT,
    TRAINING_SEED,
    Progress,
    RunOutcome,
    RunRequest,
    oracle_for,
    run_all,
    scenario_at,
    workload_for,
)
from chiron_operator.sim.sourcefile import UsageError


@dataclass(frozen=True, slots=True)
class SweepParam:
    """A Chiron tunable (wire path under the pool's `tuning`) and the values to try."""

    path: str
    values: tuple[Any, ...]


Config = tuple[tuple[str, Any], ...]
"""One override set: (wire path, value) pairs, the defaults when empty."""


def parse_param(text: str) -> SweepParam:
    """`global.ibpHighRatio=0.7,0.8,0.9` -> SweepParam (numbers and booleans parsed as such)."""
    path, _, raw = text.partition("=")
    if not path or not raw:
        raise UsageError(f"expected PATH=V1,V2,..., got {text!r}")
    return SweepParam(path.strip(), tuple(_number(v.strip()) for v in raw.split(",")))


def _number(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


def sweep_configs(params: Sequence[SweepParam], *, grid: bool) -> list[Config]:
    """Override sets to run: the defaults, then each value of each parameter alone
    (one-at-a-time), or the full cartesian product with `grid`."""
    if grid:
        combos = itertools.product(*[[(p.path, v) for v in p.values] for p in params])
        return [tuple(c) for c in combos]
    configs: list[Config] = [()]
    configs += [((p.path, v),) for p in params for v in p.values]
    return configs


def sweep_chiron(
    paths: Sequence[str],
    params: Sequence[SweepParam],
    *,
    quick: bool,
    seeds: Sequence[int] = (TRAINING_SEED,),
    grid: bool = False,
    jobs: int = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run Chiron with each override set on every scenario and seed; pick the best set.

    Overrides change defaults: a scenario that sets a value of its own keeps it.

    The pick is `adoption.adopt`: the smallest worst regret over every run (how far a set
    falls short of the best any set reached on that run), the defaults when they tie (the
    first set, one-at-a-time; a grid has no reference), else the cheapest among the tied. Each
    row records its `worst_regret`; `leave_one_out` says what the rule would have adopted
    without each scenario, and how that set did on it.
    """
    started = time.perf_counter()
    configs = sweep_configs(params, grid=grid)
    invalid = _invalid_configs(configs, paths, quick)
    requests = _sweep_requests(configs, invalid, paths, seeds, quick)
    outcomes = run_all(requests, jobs=jobs, progress=progress)
    bounds = {
        (path, seed): oracle_for(scenario_at(path, quick), workload_for(path, quick, seed))
        for path in paths
        for seed in seeds
    }
    rows: list[dict[str, Any]] = [
        {"overrides": dict(config), "invalid": invalid[index], "runs": []}
        if index in invalid
        else _sweep_row(config, [o for o in outcomes if o.request.tag == str(index)], bounds, quick)
        for index, config in enumerate(configs)
    ]
    reference = None if grid else 0
    for row, regret in zip(rows, scores(rows), strict=True):
        if regret is not None:
            row["worst_regret"] = regret
    return {
        "params": [{"path": p.path, "values": list(p.values)} for p in params],
        "mode": "grid" if grid else "one-at-a-time",
        "seeds": list(seeds),
        "quick": quick,
        "scenarios": [scenario_at(p, quick).name for p in paths],
        "rows": rows,
        "best": adopt(rows, reference),
        "dominant": None if reference is None else dominant(rows, reference),
        "adoption_rule": "worst regret, then leximin over the regrets; else dominance",
        "leave_one_out": leave_one_out(rows, reference),
        "target_attainment": TARGET_ATTAINMENT,
        "wall_s": time.perf_counter() - started,
    }


def _invalid_configs(
    configs: Sequence[Config], paths: Sequence[str], quick: bool
) -> dict[int, list[str]]:
    """Override sets the pool's own rules reject, by index, with why for each scenario."""
    invalid: dict[int, list[str]] = {}
    for index, config in enumerate(configs):
        for path in paths:
            try:
                with_overrides(scenario_at(path, quick), config, defaults_only=True)
            except ValueError as error:  # a combination the pool's own rules reject
                first = str(error).splitlines()[1:3]
                invalid.setdefault(index, []).append(
                    f"{scenario_at(path, quick).name}: {' '.join(x.strip() for x in first)}"
                )
    return invalid


def _sweep_requests(
    configs: Sequence[Config],
    invalid: Mapping[int, list[str]],
    paths: Sequence[str],
    seeds: Sequence[int],
    quick: bool,
) -> list[RunRequest]:
    """Every valid override set on every scenario and seed, tagged with the set's index."""
    return [
        RunRequest(
            path,
            quick,
            PolicySpec("chiron", overrides=config, defaults_only=True),
            seed,
            tag=str(index),
        )
        for index, config in enumerate(configs)
        if index not in invalid
        for path in paths
        for seed in seeds
    ]


def _sweep_row(
    config: Config,
    runs: Sequence[RunOutcome],
    bounds: Mapping[tuple[str, int], OracleResult],
    quick: bool,
) -> dict[str, Any]:
    """One override set's score over its runs: how many reach the target, and the means."""
    per_run = [
        _run_record(o, bounds[(o.request.scenario_path, o.request.seed)], quick) for o in runs
    ]
    met = sum(1 for r in per_run if r["attainment"] >= TARGET_ATTAINMENT)
    mean_ratio = sum(r["oracle_ratio"] for r in per_run) / max(1, len(per_run))
    mean_attainment = sum(r["attainment"] for r in per_run) / max(1, len(per_run))
    return {
        "overrides": dict(config),
        "runs_meeting_target": met,
        "mean_attainment": mean_attainment,
        "mean_oracle_ratio": mean_ratio,
        "runs": per_run,
    }


def _run_record(outcome: RunOutcome, bound: OracleResult, quick: bool) -> dict[str, Any]:
    """One run of a sweep row, with its GPU-hours over the oracle's."""
    metrics = outcome.metrics
    return {
        "scenario": scenario_at(outcome.request.scenario_path, quick).name,
        "seed": outcome.request.seed,
        "attainment": attainment(metrics),
        "interactive_slo_attainment": metrics["interactive_slo_attainment"],
        "batch_deadline_attainment": metrics["batch_deadline_attainment"],
        "gpu_hours": metrics["gpu_hours"],
        "oracle_ratio": metrics["gpu_hours"] / bound.gpu_hours,
        "restarts": metrics["restarts"],
        "scaling_actions": metrics["scaling_actions"],
    }


def summary_lines(document: Mapping[str, Any]) -> list[str]:
    """One line per override set, the rule's pick starred and the set dominating the defaults
    marked + (what `chiron-sim sweep` prints)."""
    lines = []
    for index, row in enumerate(document["rows"]):
        mark = "*" if index == document["best"] else " "
        if index == document.get("dominant"):
            mark = "+" if mark == " " else "*+"
        if "invalid" in row:
            lines.append(f"  {row['overrides']}: invalid ({'; '.join(row['invalid'])})")
            continue
        lines.append(
            f"{mark} {row['overrides'] or 'defaults'}: {row['runs_meeting_target']} runs >= "
            f"target, worst regret {100 * row.get('worst_regret', 0.0):.2f} pts, mean "
            f"attainment {row['mean_attainment']:.4f}, mean GPU-h/oracle "
            f"{row['mean_oracle_ratio']:.2f}"
        )
    return lines
