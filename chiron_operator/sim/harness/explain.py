"""Why Chiron lost: its run and the winner's, side by side, on the scenarios where it lost.

For every scenario of a bench document where Chiron misses a goal, the policy it is measured
against (the cheapest baseline at Chiron's attainment, else the hindsight reference) is run
again next to Chiron on the same seed, and one figure shows the two as columns, with the rows
that explain a loss: load and queues; instances per role (ready, and with starting ones); the
batch size each role runs against its --max-num-seqs; interactive TTFT and mean ITL at the SLO
percentile against the SLOs; and batch requests running on mixed pods. Every run is rebuilt
from the document (the tuned Llumnix's thresholds, the static count, the hindsight factor), so
the figures are of the very runs the tables report.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chiron_operator.sim.engine import SimResult
from chiron_operator.sim.harness.hindsight import hindsight_spec
from chiron_operator.sim.harness.policies import (
    CHIRON,
    HINDSIGHT,
    LLUMNIX_TUNED,
    STATIC,
    PolicySpec,
)
from chiron_operator.sim.harness.report_goals import GOAL_ATTAINMENT, attainment, best_baseline_at
from chiron_operator.sim.harness.runs import (
    RunRequest,
    scenario_at,
    simulate_request,
    suite_paths,
)


@dataclass(frozen=True, slots=True)
class Loss:
    """A scenario Chiron lost, and to what: `rival` is the roster name or `hindsight`."""

    scenario: str
    path: str
    rival: str
    why: str


def losses(document: Mapping[str, Any], paths: Mapping[str, str]) -> list[Loss]:
    """The scenarios where Chiron misses 99% or costs more than the policy it is measured
    against; `paths` maps scenario names to their files."""
    found = []
    for scenario in document["scenarios"]:
        policies = scenario["policies"]
        chiron = policies[CHIRON]
        reached = attainment(chiron)
        best = best_baseline_at(policies, reached, CHIRON)
        if best is not None and best[1] < chiron["gpu_hours"]:
            rival_reached = attainment(policies[best[0]])
            why = f"{best[0]} reaches {rival_reached:.2%} for {best[1]:.2f} GPU-h"
            rival = best[0]
        elif reached < GOAL_ATTAINMENT or scenario["hindsight"]["gpu_hours"] < chiron["gpu_hours"]:
            reference = scenario["hindsight"]
            why = f"the hindsight reference: {attainment(reference):.2%}, "
            why += f"{reference['gpu_hours']:.2f} GPU-h"
            rival = HINDSIGHT
        else:
            continue
        why = f"chiron {reached:.2%} for {chiron['gpu_hours']:.2f} GPU-h; {why}"
        found.append(Loss(scenario["name"], paths[scenario["name"]], rival, why))
    return found


def rival_spec(document: Mapping[str, Any], loss: Loss) -> PolicySpec:
    """The rival's roster entry with the parameters the bench chose for it."""
    scenario = next(s for s in document["scenarios"] if s["name"] == loss.scenario)
    quick, seed = bool(document["quick"]), int(document["seed"])
    if loss.rival == HINDSIGHT:
        return hindsight_spec(loss.path, quick, seed, scenario["hindsight_search"]["chosen_factor"])
    if loss.rival == STATIC:
        return PolicySpec(STATIC, static_replicas=scenario["static_sweep"]["chosen_replicas"])
    if loss.rival == LLUMNIX_TUNED:
        row = scenario["llumnix_sweep"]["rows"][scenario["llumnix_sweep"]["chosen"]]
        up, down = row["scale_up_freeness_blocks"], row["scale_down_freeness_blocks"]
        return PolicySpec(LLUMNIX_TUNED, freeness=(up, down))
    return PolicySpec(loss.rival)


def explain(
    document: Mapping[str, Any], paths: Mapping[str, str], out_dir: Path
) -> list[tuple[Loss, Path]]:
    """One side-by-side figure per lost scenario into `out_dir`; returns them."""
    from chiron_operator.sim.harness.explain_plots import plot_side_by_side  # noqa: PLC0415

    made = []
    quick, seed = bool(document["quick"]), int(document["seed"])
    for loss in losses(document, paths):
        runs: list[tuple[str, SimResult]] = []
        for spec in (PolicySpec(CHIRON), rival_spec(document, loss)):
            runs.append((spec.label, simulate_request(RunRequest(loss.path, quick, spec, seed))))
        slo = scenario_at(loss.path, quick).tuning().slo
        path = out_dir / f"explain-{loss.scenario}.png"
        made.append((loss, plot_side_by_side(runs, slo, path, title=loss.why)))
    return made


def explain_section(made: Sequence[tuple[Loss, Path]], base: Path) -> list[str]:
    """Markdown linking each figure, with what it compares."""
    lines = []
    for loss, path in made:
        relative = path.resolve().relative_to(base.resolve()) if path.is_absolute() else path
        lines += [f"### {loss.scenario}", "", loss.why + ".", "", f"![{loss.scenario}]({relative})"]
        lines.append("")
    return lines


def add_parser(commands: Any) -> None:
    """`chiron-sim explain`: its arguments."""
    parser = commands.add_parser(
        "explain",
        help="why Chiron lost: its runs and the winner's side by side, from a bench JSON",
    )
    parser.add_argument("--bench", type=Path, required=True, dest="bench_path")
    parser.add_argument("--out-dir", type=Path, required=True, help="where the PNGs go")
    parser.add_argument(
        "--scenario-file",
        action="append",
        default=[],
        dest="scenario_files",
        help="a scenario file the bench ran (repeatable; packaged ones are found by name)",
    )


def command(args: argparse.Namespace) -> int:
    """Draw every lost scenario of the bench JSON; print what each figure compares."""
    document = json.loads(args.bench_path.read_text())
    paths = {Path(p).stem: p for p in suite_paths()}
    paths.update(document.get("generated", {}).get("files", {}))  # a robustness document's
    for path in args.scenario_files:
        paths[scenario_at(path, bool(document["quick"])).name] = path
    made = explain(document, paths, args.out_dir)
    for loss, figure in made:
        print(f"{loss.scenario}: {loss.why} -> {figure}")
    return 0
