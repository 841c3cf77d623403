"""Robustness on generated scenarios: the benchmark on traffic nobody tuned on.

`robustness(count, seed, out_dir=...)` writes `count` generated scenarios (`generator`) into
`out_dir`, runs the whole benchmark on them (`bench.bench`: the tuned Llumnix and the static
count chosen on the training seed, the hindsight reference searched on the evaluation seed)
and returns the bench document with two more keys: `generated` (the generator's seed, size, the
scenario files and each scenario's features) and `robustness` (`summarise`).

The summary judges every policy of the roster against every baseline, scenario by scenario, at
equal attainment (attainment: the lower of the two classes, `report_goals.attainment`):

- **win**: at least the baseline's attainment for fewer GPU-hours, or more attainment for no
  more GPU-hours; **loss**: the reverse; **tie**: equal on both; otherwise **incomparable**
  (more attainment for more GPU-hours, or less for less).
- **at target**: the scenarios where it reaches 99% on both classes, out of those where any
  policy of the roster does; and out of those where any policy but the static pool does (the
  static count is chosen on the training seed of the very scenario and is ready at its peak size
  from the start: a burst inside the first cold start is met by it alone).
- **worst cases**: the largest attainment gap (how far below the best other policy's
  attainment, capped at the 99% target, it ends), the largest GPU-hour ratio to the cheapest
  baseline at equal attainment (`report_goals.best_baseline_at`; Chiron both ways is never a
  baseline), and the largest to the hindsight reference (where the reference reaches 99%),
  each with its scenario.

Attainments equal to 4 decimals are equal, as in the report; GPU-hours within 0.1% are equal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the pinned deps

from chiron_operator.sim.harness.bench import bench
from chiron_operator.sim.harness.generator import FULL, TINY, GeneratorSize, generate_with_features
from chiron_operator.sim.harness.generator import write_scenarios as write_generated
from chiron_operator.sim.harness.policies import ROSTER, STATIC, llumnix_grid
from chiron_operator.sim.harness.report_goals import (
    GOAL_ATTAINMENT,
    NOT_BASELINES,
    attainment,
    best_baseline_at,
)
from chiron_operator.sim.harness.runs import EVALUATION_SEED, TRAINING_SEED, Progress
from chiron_operator.sim.sourcefile import UsageError

ATTAINMENT_EPS: Final = 5e-5
GPU_HOURS_REL_EPS: Final = 1e-3
Outcome = Literal["win", "loss", "tie", "incomparable"]


def robustness(
    count: int,
    seed: int,
    *,
    out_dir: Path,
    jobs: int = 1,
    size: GeneratorSize = FULL,
    eval_seed: int = EVALUATION_SEED,
    training_seed: int = TRAINING_SEED,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Generate, write and bench `count` scenarios; the bench document with the summary."""
    generated = generate_with_features(count, seed, size)
    paths = write_generated([g.scenario for g in generated], out_dir)
    document = bench(
        [str(p) for p in paths],
        quick=False,
        seed=eval_seed,
        training_seed=training_seed,
        jobs=jobs,
        progress=progress,
    )
    document["generated"] = {
        "count": count,
        "seed": seed,
        "size": asdict(size),
        "out_dir": str(out_dir),
        "files": {g.scenario.name: str(p) for g, p in zip(generated, paths, strict=True)},
        "features": {g.scenario.name: g.features for g in generated},
    }
    document["robustness"] = summarise(document)
    return document


def compare(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> Outcome:
    """One policy's run against another's on the same scenario (see the module docstring)."""
    a, b = attainment(mine), attainment(theirs)
    gm, gt = float(mine["gpu_hours"]), float(theirs["gpu_hours"])
    same_att = abs(a - b) <= ATTAINMENT_EPS
    same_gh = abs(gm - gt) <= GPU_HOURS_REL_EPS * max(gm, gt)
    if same_att and same_gh:
        return "tie"
    if (a >= b - ATTAINMENT_EPS and gm < gt and not same_gh) or (
        a > b + ATTAINMENT_EPS and (gm <= gt or same_gh)
    ):
        return "win"
    if (b >= a - ATTAINMENT_EPS and gt < gm and not same_gh) or (
        b > a + ATTAINMENT_EPS and (gt <= gm or same_gh)
    ):
        return "loss"
    return "incomparable"


@dataclass(frozen=True, slots=True)
class Worst:
    """A worst case: its value and the scenario it happened on."""

    value: float
    scenario: str


@dataclass(slots=True)
class PolicyRobustness:
    """One policy's row of the robustness table."""

    policy: str
    outcomes: dict[str, dict[Outcome, int]] = field(default_factory=dict)
    at_target: int = 0
    reachable: int = 0
    at_target_autoscaled: int = 0
    reachable_autoscaled: int = 0
    worst_gap: Worst | None = None
    worst_baseline_ratio: Worst | None = None
    no_baseline_reaches: int = 0
    worst_hindsight_ratio: Worst | None = None

    def totals(self) -> dict[Outcome, int]:
        """Wins, losses, ties and incomparables against every baseline together."""
        summed: dict[Outcome, int] = {"win": 0, "loss": 0, "tie": 0, "incomparable": 0}
        for counts in self.outcomes.values():
            for outcome, n in counts.items():
                summed[outcome] += n
        return summed


def _worse(current: Worst | None, value: float, scenario: str) -> Worst:
    return Worst(value, scenario) if current is None or value > current.value else current


def _record(row: PolicyRobustness, scenario: Mapping[str, Any], baselines: Sequence[str]) -> None:
    """Fold one scenario into `row`."""
    name, policies = scenario["name"], scenario["policies"]
    mine = policies[row.policy]
    reached = attainment(mine)
    for baseline in baselines:
        if baseline != row.policy:
            counts = row.outcomes.setdefault(
                baseline, {"win": 0, "loss": 0, "tie": 0, "incomparable": 0}
            )
            counts[compare(mine, policies[baseline])] += 1
    target = GOAL_ATTAINMENT - ATTAINMENT_EPS
    if any(attainment(m) >= target for m in policies.values()):
        row.reachable += 1
        row.at_target += reached >= target
    if any(attainment(m) >= target for p, m in policies.items() if p != STATIC):
        row.reachable_autoscaled += 1
        row.at_target_autoscaled += reached >= target
    others = [attainment(m) for p, m in policies.items() if p != row.policy]
    if others:
        row.worst_gap = _worse(row.worst_gap, min(GOAL_ATTAINMENT, max(others)) - reached, name)
    best = best_baseline_at(policies, reached, row.policy)
    if best is None:
        row.no_baseline_reaches += 1
    else:
        row.worst_baseline_ratio = _worse(
            row.worst_baseline_ratio, mine["gpu_hours"] / best[1], name
        )
    reference = scenario.get("hindsight")
    if reference and reference["reached_target"] and reference["gpu_hours"] > 0:
        ratio = mine["gpu_hours"] / reference["gpu_hours"]
        row.worst_hindsight_ratio = _worse(row.worst_hindsight_ratio, ratio, name)


def robustness_rows(document: Mapping[str, Any]) -> list[PolicyRobustness]:
    """One row per policy of the roster (in the bench's order), over every scenario."""
    scenarios = document["scenarios"]
    if not scenarios:
        return []
    names = list(scenarios[0]["policies"])
    baselines = [n for n in names if n not in NOT_BASELINES]
    rows = [PolicyRobustness(name) for name in names]
    for scenario in scenarios:
        for row in rows:
            if row.policy in scenario["policies"]:
                _record(row, scenario, baselines)
    return rows


def summarise(document: Mapping[str, Any]) -> dict[str, Any]:
    """The robustness table as JSON-ready data, one entry per policy."""
    return {
        "scenarios": len(document["scenarios"]),
        "target_attainment": GOAL_ATTAINMENT,
        "policies": {
            row.policy: {**_plain(row), "totals": row.totals()} for row in robustness_rows(document)
        },
    }


def _plain(row: PolicyRobustness) -> dict[str, Any]:
    data = asdict(row)
    for key in ("worst_gap", "worst_baseline_ratio", "worst_hindsight_ratio"):
        worst = data[key]
        if worst is not None and not math.isfinite(worst["value"]):
            worst["value"] = None
    return data


def add_parser(commands: Any) -> None:
    """`chiron-sim robustness` and its options, on the CLI's subparsers (`commands`)."""
    parser = commands.add_parser(
        "robustness", help="the benchmark on generated scenarios, and its robustness table"
    )
    parser.add_argument("--count", type=int, required=True, help="scenarios to generate")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed")
    parser.add_argument("--json", type=Path, required=True, dest="json_path")
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="where the generated scenario files go (default: generated/ next to --json)",
    )
    parser.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument(
        "--tiny", action="store_true", help="scenarios of minutes and a few hundred requests"
    )
    parser.add_argument("--no-progress", action="store_true")


def expected_runs(count: int) -> int:
    """Roughly how many runs `robustness` makes: each scenario's Llumnix grid, roster, static
    search (~9 probes) and hindsight search (~12 schedules)."""
    return count * (len(llumnix_grid(quick=False)) + len(ROSTER) + 9 + 12)


def command(args: argparse.Namespace) -> int:
    """Run `chiron-sim robustness` with a progress bar, write its JSON, print the table's
    totals; the exit status."""
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    out_dir: Path = args.out_dir or args.json_path.parent / "generated"
    bar = tqdm(
        total=expected_runs(args.count), unit="run", desc="robustness", disable=args.no_progress
    )

    def step(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(1)

    with bar:
        document = robustness(
            args.count,
            args.seed,
            out_dir=out_dir,
            jobs=args.jobs,
            size=TINY if args.tiny else FULL,
            progress=step,
        )
    args.json_path.parent.mkdir(parents=True, exist_ok=True)
    args.json_path.write_text(json.dumps(document, indent=1) + "\n")
    for row in robustness_rows(document):
        print(
            f"{row.policy}: vs baselines {_counts(row.totals())}; {row.at_target} of "
            f"{row.reachable} at {GOAL_ATTAINMENT:.0%} where any policy is, "
            f"{row.at_target_autoscaled} of {row.reachable_autoscaled} where any autoscaler is"
        )
    print(
        f"{document['runs']} runs on {args.count} generated scenarios in "
        f"{document['bench_wall_s']:.1f} s wall ({args.jobs} jobs); scenarios in {out_dir}, "
        f"results in {args.json_path}"
    )
    return 0


def _counts(totals: Mapping[Outcome, int]) -> str:
    return ", ".join(f"{n} {outcome}" for outcome, n in totals.items())
