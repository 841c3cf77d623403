"""`chiron-sim`: run one scenario, benchmark the suite, sweep Chiron's tunables, write the report.

    chiron-sim run SCENARIO.yaml --out DIR [--policy chiron] [--seed 0] [--quick] [--exact]
    chiron-sim run --trace TRACE.csv --pool POOL.yaml --out DIR [--profile P] [--cold-start C]
    chiron-sim bench [--quick] --json PATH [--scenarios a,b] [--scenario-file F.yaml] [--jobs 2]
    chiron-sim sweep --json PATH --param global.ibpHighRatio=0.7,0.8,0.9 [--quick] [--grid]
    chiron-sim robustness --count 20 --seed 0 --json PATH [--out-dir DIR] [--jobs 2]
    chiron-sim report --bench PATH [--sweep PATH] [--robustness PATH] --out docs/BENCHMARKS.md

A SCENARIO is a file or the name of a packaged one (`chiron-sim run conv-interactive`).
`--trace` replays your own traffic on your own `LLMServingPool` (`user_run`; docs/SIMULATOR.md).
A file that cannot be used is reported as `file:line:column: problem`, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the pinned deps

from chiron_operator.perfmodel.coldstart import cold_start_names
from chiron_operator.perfmodel.profiles import profile_names
from chiron_operator.sim.config import StepMode
from chiron_operator.sim.harness import bench as benchmod
from chiron_operator.sim.harness import explain as explainmod
from chiron_operator.sim.harness import robustness as robustnessmod
from chiron_operator.sim.harness import runs as runmod
from chiron_operator.sim.harness import sweep as sweepmod
from chiron_operator.sim.harness import sweep_cli, user_run
from chiron_operator.sim.harness.policies import (
    CHIRON,
    LLUMNIX_TUNED,
    ROSTER,
    STATIC,
    PolicySpec,
    llumnix_grid,
)
from chiron_operator.sim.harness.report import write_report
from chiron_operator.sim.harness.run_files import summary_line, write_run
from chiron_operator.sim.scenario import load_scenario
from chiron_operator.sim.sourcefile import SourceError, UsageError


def _default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chiron-sim", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    _run_arguments(
        commands.add_parser(
            "run",
            help="simulate one scenario, or your own trace on your own pool, with one policy",
            description="Simulate one scenario, or a trace of your own traffic on your own "
            "LLMServingPool (--trace with --pool), and write summary.json, decisions.jsonl, "
            "requests.csv, ticks.csv and plots into --out.",
        )
    )
    _bench_arguments(commands.add_parser("bench", help="every scenario x every policy, as JSON"))

    robustnessmod.add_parser(commands)
    explainmod.add_parser(commands)

    sweep_cli.add_parser(commands)

    report = commands.add_parser("report", help="write docs/BENCHMARKS.md from a bench JSON")
    report.add_argument("--bench", type=Path, required=True, dest="bench_path")
    report.add_argument("--sweep", type=Path, action="append", default=[], dest="sweep_paths")
    report.add_argument(
        "--robustness", type=Path, dest="robustness_path", help="a `robustness` JSON to include"
    )
    report.add_argument("--out", type=Path, required=True)
    report.add_argument("--img-dir", type=Path, help="default: img/ next to --out")
    report.add_argument("--notes", type=Path, help="hand-written analysis to include")
    return parser


def _run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("scenario", nargs="?", help="scenario file, or the name of a packaged one")
    run.add_argument("--out", type=Path, required=True, help="directory for CSVs, JSON, PNGs")
    run.add_argument(
        "--policy",
        choices=ROSTER,
        help="default: chiron (with --trace: Chiron as the pool runs it, per spec.gateway)",
    )
    _trace_arguments(run)
    run.add_argument("--seed", type=int, default=runmod.EVALUATION_SEED)
    run.add_argument("--quick", action="store_true", help="the scenario's quick variant")
    run.add_argument("--exact", action="store_true", help="step every iteration (slow)")
    run.add_argument("--no-plots", action="store_true")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--static-replicas", type=int, help="static: instances (default: oracle peak)")
    run.add_argument("--freeness", help="llumnix-tuned: UP,DOWN thresholds in blocks/request")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="chiron: override a pool tunable, e.g. global.ibpHighRatio=0.7 (repeatable)",
    )


def _bench_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--json", type=Path, required=True, dest="json_path")
    bench.add_argument("--quick", action="store_true", help="quick variants (< 60 s in all)")
    bench.add_argument("--scenarios", help="comma-separated names (default: the whole suite)")
    bench.add_argument(
        "--scenario-file",
        type=Path,
        action="append",
        default=[],
        dest="scenario_files",
        metavar="FILE",
        help="a scenario file of your own (repeatable); alone, only these run",
    )
    bench.add_argument("--jobs", type=int, default=_default_jobs())
    bench.add_argument("--seed", type=int, default=runmod.EVALUATION_SEED)
    bench.add_argument("--training-seed", type=int, default=runmod.TRAINING_SEED)
    bench.add_argument("--no-progress", action="store_true")


def _trace_arguments(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("your own traffic (instead of SCENARIO)")
    group.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="CSV: arrival_s,prompt_tokens,output_tokens[,class,deadline_s] or an Azure LLM "
        "inference trace (TIMESTAMP,ContextTokens,GeneratedTokens)",
    )
    group.add_argument(
        "--pool", type=Path, metavar="POOL.yaml", help="your LLMServingPool manifest"
    )
    group.add_argument(
        "--profile",
        choices=profile_names(),
        metavar="NAME",
        help=f"model and GPU the pods run: {', '.join(profile_names())} "
        f"(default {user_run.DEFAULT_PROFILE})",
    )
    group.add_argument(
        "--cold-start",
        type=user_run.cold_start_arg,
        metavar="PRESET|SECONDS",
        help=f"pod start-up: a preset ({', '.join(cold_start_names())}) or seconds "
        f"(default {user_run.DEFAULT_COLD_START})",
    )
    group.add_argument(
        "--horizon-s",
        type=user_run.seconds_arg,
        help=f"simulated seconds (default: {user_run.TAIL_S:g} s past the last arrival, or "
        "the latest batch deadline)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `chiron-sim`; returns the exit status."""
    args = _parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run,
        "bench": _bench,
        "sweep": sweep_cli.command,
        "robustness": robustnessmod.command,
        "explain": explainmod.command,
        "report": _report,
    }
    try:
        return commands[args.command](args)
    except (SourceError, UsageError, OSError) as error:
        # Input the user can fix: one `file:line:column: problem` line per problem. Anything
        # else is a defect of the simulator and keeps its traceback.
        for line in str(error).splitlines():
            print(f"chiron-sim: error: {line}", file=sys.stderr)
        return 2


def _scenario_path(name: str) -> str:
    return runmod.suite_paths([name])[0]


def _policy_spec(args: argparse.Namespace, path: str) -> PolicySpec:
    overrides = tuple(
        (key, sweepmod.parse_param(f"{key}={value}").values[0])
        for key, _, value in (item.partition("=") for item in args.set)
    )
    if overrides and args.policy != CHIRON:
        raise UsageError("--set applies to chiron only")
    if args.policy == STATIC:
        replicas = args.static_replicas
        if replicas is None:
            scenario = runmod.scenario_at(path, args.quick)
            workload = runmod.workload_for(path, args.quick, args.seed)
            replicas = runmod.oracle_for(scenario, workload).peak_instances
        return PolicySpec(STATIC, static_replicas=replicas)
    if args.policy == LLUMNIX_TUNED:
        if not args.freeness:
            raise UsageError("llumnix-tuned needs --freeness UP,DOWN (see `chiron-sim bench`)")
        up, down = (float(v) for v in args.freeness.split(","))
        return PolicySpec(LLUMNIX_TUNED, freeness=(up, down))
    return PolicySpec(args.policy, overrides=overrides)


def _run_path(args: argparse.Namespace) -> str:
    """The scenario file to run: the one named, or the one `--trace` writes into --out."""
    trace_only = ("pool", "profile", "cold_start", "horizon_s")
    given = [name for name in trace_only if getattr(args, name) is not None]
    if args.trace is None:
        if args.scenario is None:
            raise UsageError("run needs a SCENARIO, or --trace FILE --pool POOL.yaml")
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} goes with --trace")
        args.policy = args.policy or CHIRON
        return _scenario_path(args.scenario)
    if args.scenario is not None:
        raise UsageError("give a SCENARIO or --trace, not both")
    if args.pool is None:
        raise UsageError("--trace needs --pool POOL.yaml (your LLMServingPool manifest)")
    path, args.policy = user_run.prepare(
        args.out,
        args.trace,
        args.pool,
        profile=args.profile,
        cold_start=args.cold_start,
        fixed_horizon_s=args.horizon_s,
        policy=args.policy,
    )
    return str(path)


def _run(args: argparse.Namespace) -> int:
    path = _run_path(args)
    load_scenario(path)  # fail early, with the file's own errors
    scenario = runmod.scenario_at(path, args.quick)
    spec = _policy_spec(args, path)
    request = runmod.RunRequest(
        path, args.quick, spec, args.seed, StepMode.EXACT if args.exact else StepMode.FAST
    )
    with tqdm(
        total=round(scenario.horizon_s),
        unit="sim s",
        desc=f"{scenario.name}/{spec.label}",
        disable=args.no_progress,
    ) as bar:

        def advance(now: float) -> None:
            bar.update(round(now) - bar.n)

        result = runmod.simulate_request(request, progress=advance)
        bar.update(bar.total - bar.n)
    workload = runmod.workload_for(path, args.quick, args.seed)
    bound = runmod.oracle_for(scenario, workload)
    document = write_run(args.out, result, scenario, spec, bound, plots=not args.no_plots)
    print(summary_line(document))
    print(f"wrote {args.out}: summary.json, decisions.jsonl, requests.csv, ticks.csv", end="")
    print("" if args.no_plots else ", load/replicas/batch_sizes/latency.png")
    return 0


def _progress(disabled: bool, total: int, desc: str) -> tuple[tqdm[Any], Callable[[str], None]]:
    bar: tqdm[Any] = tqdm(total=total, unit="run", desc=desc, disable=disabled)

    def step(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(1)

    return bar, step


def _names(text: str | None) -> list[str] | None:
    return None if not text else [n.strip() for n in text.split(",") if n.strip()]


def _bench_paths(args: argparse.Namespace) -> list[str]:
    """The suite (or the scenarios named), plus the user's own files, each loaded once now so
    that a bad file stops the bench with its own error before any run."""
    named = _names(args.scenarios)
    paths = [] if named is None and args.scenario_files else runmod.suite_paths(named)
    for file in args.scenario_files:
        if not file.is_file():
            raise UsageError(f"--scenario-file {file}: no such file")
        paths.append(str(file))
    named_at: dict[str, str] = {}
    for path in paths:
        name = load_scenario(path).name
        if name in named_at:
            # Results are reported by scenario name: two of one name would be one row.
            raise UsageError(f"two scenarios named {name!r}: {named_at[name]} and {path}")
        named_at[name] = path
    return paths


def _bench(args: argparse.Namespace) -> int:
    paths = _bench_paths(args)
    # The static search takes a few rounds of a few probes: ~9 runs per scenario, roughly.
    runs = len(paths) * (len(llumnix_grid(quick=args.quick)) + len(ROSTER) + 9)
    started = time.perf_counter()
    bar, step = _progress(args.no_progress, runs, "bench")
    with bar:
        document = benchmod.bench(
            paths,
            quick=args.quick,
            seed=args.seed,
            training_seed=args.training_seed,
            jobs=args.jobs,
            progress=step,
        )
    args.json_path.parent.mkdir(parents=True, exist_ok=True)
    args.json_path.write_text(json.dumps(document, indent=1) + "\n")
    for scenario in document["scenarios"]:
        chiron = scenario["policies"][CHIRON]
        reference = scenario["hindsight"]
        print(
            f"{scenario['name']}: hindsight {reference['gpu_hours']:.2f} GPU-h, oracle "
            f"{scenario['oracle_gpu_hours']:.2f}; chiron {chiron['gpu_hours']:.2f} GPU-h, "
            f"interactive {chiron['interactive_slo_attainment']}, "
            f"batch {chiron['batch_deadline_attainment']}"
        )
    speed = document["sim_requests_per_wall_s"]
    print(
        f"{document['runs']} runs in {time.perf_counter() - started:.1f} s wall "
        f"({args.jobs} jobs); simulator {speed:,.0f} requests per wall s"
    )
    return 0


def _natural_key(path: Path) -> tuple[tuple[int, int | str], ...]:
    """The file name with its numbers read as numbers (`sweep-chiron-9` before `-10`); a name
    without one (`sweep-chiron`, the latest round) after those with one."""
    parts = re.split(r"(\d+)", path.stem)
    numbered = any(p.isdigit() for p in parts)
    key = [(0, int(p)) if p.isdigit() else (1, p) for p in parts if p]
    return ((0 if numbered else 1, 0), *key)


def _report(args: argparse.Namespace) -> int:
    document = json.loads(args.bench_path.read_text())
    # Rounds in the order they ran: round 10 after round 9, not after round 1.
    paths = sorted(args.sweep_paths, key=_natural_key)
    sweeps = [{"title": p.stem, **json.loads(p.read_text())} for p in paths]
    out: Path = args.out
    img_dir: Path = args.img_dir or out.parent / "img"
    notes = args.notes.read_text() if args.notes and args.notes.exists() else ""
    robust = json.loads(args.robustness_path.read_text()) if args.robustness_path else None
    write_report(
        document,
        out,
        img_dir,
        sweeps=sweeps,
        notes=notes,
        sources={"bench": str(args.bench_path), "robustness": str(args.robustness_path or "")}
        | {"sweeps": [str(p) for p in paths]},
        robustness=robust,
    )
    print(f"wrote {out} and plots under {img_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
