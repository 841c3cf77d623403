"""`chiron-sim sweep`: its options, and the command that runs a sweep and writes its JSON.

The sweep itself (configurations, runs, the adoption rule's scores) is `sweep`; this module only
turns the command line into it, including the generated scenarios a sweep may add to the
packaged ones (`--generated`, from the robustness generator under a seed of their own).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the pinned deps

from chiron_operator.sim.harness import runs as runmod
from chiron_operator.sim.harness import sweep as sweepmod
from chiron_operator.sim.harness.generator import FULL, TINY, generate, write_scenarios
from chiron_operator.sim.sourcefile import UsageError


def add_parser(commands: Any) -> None:
    """`chiron-sim sweep` and its options, on the CLI's subparsers (`commands`)."""
    sweep = commands.add_parser("sweep", help="sweep Chiron tunables on training seeds")
    sweep.add_argument("--json", type=Path, required=True, dest="json_path")
    sweep.add_argument(
        "--param", action="append", required=True, metavar="PATH=V1,V2", dest="params"
    )
    sweep.add_argument("--grid", action="store_true", help="cartesian product, not one-at-a-time")
    sweep.add_argument("--quick", action="store_true")
    sweep.add_argument("--scenarios", help="comma-separated names (default: the whole suite)")
    sweep.add_argument("--seeds", default=str(runmod.TRAINING_SEED), help="comma-separated")
    sweep.add_argument("--jobs", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    sweep.add_argument("--no-progress", action="store_true")
    sweep.add_argument("--context", default="", help="what this sweep was for (for the report)")
    sweep.add_argument(
        "--generated",
        type=int,
        default=0,
        metavar="COUNT",
        help="also sweep on COUNT generated scenarios (`robustness`' generator)",
    )
    sweep.add_argument(
        "--generated-seed",
        type=int,
        default=runmod.TRAINING_SEED,
        help="the generator's seed for --generated (keep it apart from the robustness table's)",
    )
    sweep.add_argument(
        "--generated-dir",
        type=Path,
        help="where --generated writes its scenario files (default: sweep-generated/ next to "
        "--json)",
    )
    sweep.add_argument(
        "--generated-tiny",
        action="store_true",
        help="generated scenarios of minutes and a few hundred requests",
    )


def scenario_paths(args: argparse.Namespace) -> list[str]:
    """The packaged scenarios (or those named), then the generated ones, written out first."""
    named = [n.strip() for n in args.scenarios.split(",") if n.strip()] if args.scenarios else None
    paths = runmod.suite_paths(named)
    if args.generated < 0:
        raise UsageError("--generated must be at least 0")
    if args.generated:
        out_dir = args.generated_dir or args.json_path.parent / "sweep-generated"
        size = TINY if args.generated_tiny else FULL
        written = write_scenarios(generate(args.generated, args.generated_seed, size), out_dir)
        paths += [str(p) for p in written]
    return paths


def command(args: argparse.Namespace) -> int:
    """Run the sweep with a progress bar, write its JSON, print its summary; the exit status."""
    paths = scenario_paths(args)
    params = [sweepmod.parse_param(p) for p in args.params]
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = sweepmod.sweep_configs(params, grid=args.grid)
    total = len(configs) * len(paths) * len(seeds)
    with tqdm(total=total, unit="run", desc="sweep", disable=args.no_progress) as bar:
        document = sweepmod.sweep_chiron(
            paths,
            params,
            quick=args.quick,
            seeds=seeds,
            grid=args.grid,
            jobs=args.jobs,
            progress=_stepper(bar),
        )
    if args.context:
        document["context"] = args.context
    args.json_path.parent.mkdir(parents=True, exist_ok=True)
    args.json_path.write_text(json.dumps(document, indent=1) + "\n")
    print("\n".join(sweepmod.summary_lines(document)))
    return 0


def _stepper(bar: tqdm[Any]) -> Callable[[str], None]:
    def step(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(1)

    return step
