"""`chiron-sim`: run one scenario, benchmark the suite, sweep Chiron's tunables, write the report.

    chiron-sim run SCENARIO.yaml --out DIR [--policy chiron] [--seed 0] [--quick] [--exact]
    chiron-sim bench [--quick] --json PATH [--scenarios a,b] [--jobs 2]
    chiron-sim sweep --json PATH --param global.ibpHighRatio=0.7,0.8,0.9 [--quick] [--grid]
    chiron-sim report --bench PATH [--sweep PATH] --out docs/BENCHMARKS.md

A SCENARIO is a file or the name of a packaged one (`chiron-sim run conv-interactive`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the pinned deps

from chiron_operator.sim.config import StepMode
from chiron_operator.sim.engine import SimResult
from chiron_operator.sim.harness import bench as benchmod
from chiron_operator.sim.harness import runs as runmod
from chiron_operator.sim.harness import sweep as sweepmod
from chiron_operator.sim.harness.plots import plot_run
from chiron_operator.sim.harness.policies import (
    CHIRON,
    LLUMNIX_TUNED,
    ROSTER,
    STATIC,
    PolicySpec,
    llumnix_grid,
)
from chiron_operator.sim.harness.report import write_report
from chiron_operator.sim.records import write_requests_csv, write_ticks_csv
from chiron_operator.sim.scenario import load_scenario


def _default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chiron-sim", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="simulate one scenario with one policy")
    run.add_argument("scenario", help="scenario file, or the name of a packaged one")
    run.add_argument("--out", type=Path, required=True, help="directory for CSVs, JSON, PNGs")
    run.add_argument("--policy", default=CHIRON, choices=ROSTER)
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

    bench = commands.add_parser("bench", help="every scenario x every policy, as JSON")
    bench.add_argument("--json", type=Path, required=True, dest="json_path")
    bench.add_argument("--quick", action="store_true", help="quick variants (< 60 s in all)")
    bench.add_argument("--scenarios", help="comma-separated names (default: the whole suite)")
    bench.add_argument("--jobs", type=int, default=_default_jobs())
    bench.add_argument("--seed", type=int, default=runmod.EVALUATION_SEED)
    bench.add_argument("--training-seed", type=int, default=runmod.TRAINING_SEED)
    bench.add_argument("--no-progress", action="store_true")

    sweep = commands.add_parser("sweep", help="sweep Chiron tunables on training seeds")
    sweep.add_argument("--json", type=Path, required=True, dest="json_path")
    sweep.add_argument(
        "--param", action="append", required=True, metavar="PATH=V1,V2", dest="params"
    )
    sweep.add_argument("--grid", action="store_true", help="cartesian product, not one-at-a-time")
    sweep.add_argument("--quick", action="store_true")
    sweep.add_argument("--scenarios", help="comma-separated names (default: the whole suite)")
    sweep.add_argument("--seeds", default=str(runmod.TRAINING_SEED), help="comma-separated")
    sweep.add_argument("--jobs", type=int, default=_default_jobs())
    sweep.add_argument("--no-progress", action="store_true")
    sweep.add_argument("--context", default="", help="what this sweep was for (for the report)")

    report = commands.add_parser("report", help="write docs/BENCHMARKS.md from a bench JSON")
    report.add_argument("--bench", type=Path, required=True, dest="bench_path")
    report.add_argument("--sweep", type=Path, action="append", default=[], dest="sweep_paths")
    report.add_argument("--out", type=Path, required=True)
    report.add_argument("--img-dir", type=Path, help="default: img/ next to --out")
    report.add_argument("--notes", type=Path, help="hand-written analysis to include")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `chiron-sim`; returns the exit status."""
    args = _parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run,
        "bench": _bench,
        "sweep": _sweep,
        "report": _report,
    }
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"chiron-sim: error: {error}", file=sys.stderr)
        return 2


def _scenario_path(name: str) -> str:
    return runmod.suite_paths([name])[0]


def _policy_spec(args: argparse.Namespace, path: str) -> PolicySpec:
    overrides = tuple(
        (key, sweepmod.parse_param(f"{key}={value}").values[0])
        for key, _, value in (item.partition("=") for item in args.set)
    )
    if overrides and args.policy != CHIRON:
        raise ValueError("--set applies to chiron only")
    if args.policy == STATIC:
        replicas = args.static_replicas
        if replicas is None:
            scenario = runmod.scenario_at(path, args.quick)
            workload = runmod.workload_for(path, args.quick, args.seed)
            replicas = runmod.oracle_for(scenario, workload).peak_instances
        return PolicySpec(STATIC, static_replicas=replicas)
    if args.policy == LLUMNIX_TUNED:
        if not args.freeness:
            raise ValueError("llumnix-tuned needs --freeness UP,DOWN (see `chiron-sim bench`)")
        up, down = (float(v) for v in args.freeness.split(","))
        return PolicySpec(LLUMNIX_TUNED, freeness=(up, down))
    return PolicySpec(args.policy, overrides=overrides)


def _run(args: argparse.Namespace) -> int:
    path = _scenario_path(args.scenario)
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
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_requests_csv(result.requests, out / "requests.csv")
    write_ticks_csv(result.ticks, out / "ticks.csv")
    document = _run_document(result, scenario.name, spec, bound.gpu_hours, bound.peak_instances)
    (out / "summary.json").write_text(json.dumps(document, indent=2) + "\n")
    if not args.no_plots:
        need = [
            i + b for i, b in zip(bound.interactive_instances, bound.batch_instances, strict=True)
        ]
        plot_run(
            result.ticks,
            result.requests,
            scenario.pool.slo,
            out,
            title=f"{scenario.name} / {spec.label}",
            oracle=(bound.bin_s, need),
        )
    _print_summary(document)
    return 0


def _run_document(
    result: SimResult, name: str, spec: PolicySpec, oracle_gpu_hours: float, peak: int
) -> dict[str, Any]:
    summary = runmod.summary_metrics(result.summary)
    return {
        "scenario": name,
        "policy": spec.label,
        "policy_spec": dataclasses.asdict(spec),
        "seed": result.config.seed,
        "step_mode": result.config.step_mode.value,
        "summary": summary,
        "oracle_gpu_hours": oracle_gpu_hours,
        "oracle_peak_instances": peak,
        "gpu_hours_over_oracle": result.summary.gpu_hours / oracle_gpu_hours,
        "events": result.events,
        "wall_s": result.wall_s,
        "sim_requests_per_wall_s": result.summary.requests / max(result.wall_s, 1e-9),
    }


def _print_summary(document: dict[str, Any]) -> None:
    s = document["summary"]

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    print(
        f"{document['scenario']} / {document['policy']}: interactive SLO "
        f"{pct(s['interactive_slo_attainment'])}, batch deadlines "
        f"{pct(s['batch_deadline_attainment'])}, {s['gpu_hours']:.2f} GPU-h "
        f"({document['gpu_hours_over_oracle']:.2f}x oracle {document['oracle_gpu_hours']:.2f}), "
        f"{s['scaling_actions']} scaling actions, {s['restarts']} restarts; "
        f"{document['sim_requests_per_wall_s']:,.0f} simulated requests per wall s"
    )


def _progress(disabled: bool, total: int, desc: str) -> tuple[tqdm[Any], Callable[[str], None]]:
    bar: tqdm[Any] = tqdm(total=total, unit="run", desc=desc, disable=disabled)

    def step(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(1)

    return bar, step


def _names(text: str | None) -> list[str] | None:
    return None if not text else [n.strip() for n in text.split(",") if n.strip()]


def _bench(args: argparse.Namespace) -> int:
    paths = runmod.suite_paths(_names(args.scenarios))
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
        print(
            f"{scenario['name']}: oracle {scenario['oracle_gpu_hours']:.2f} GPU-h; chiron "
            f"{chiron['gpu_hours']:.2f} GPU-h, interactive {chiron['interactive_slo_attainment']}"
            f", batch {chiron['batch_deadline_attainment']}"
        )
    speed = document["sim_requests_per_wall_s"]
    print(
        f"{document['runs']} runs in {time.perf_counter() - started:.1f} s wall "
        f"({args.jobs} jobs); simulator {speed:,.0f} requests per wall s"
    )
    return 0


def _sweep(args: argparse.Namespace) -> int:
    paths = runmod.suite_paths(_names(args.scenarios))
    params = [sweepmod.parse_param(p) for p in args.params]
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = sweepmod.sweep_configs(params, grid=args.grid)
    bar, step = _progress(args.no_progress, len(configs) * len(paths) * len(seeds), "sweep")
    with bar:
        document = sweepmod.sweep_chiron(
            paths,
            params,
            quick=args.quick,
            seeds=seeds,
            grid=args.grid,
            jobs=args.jobs,
            progress=step,
        )
    if args.context:
        document["context"] = args.context
    args.json_path.parent.mkdir(parents=True, exist_ok=True)
    args.json_path.write_text(json.dumps(document, indent=1) + "\n")
    for index, row in enumerate(document["rows"]):
        mark = "*" if index == document["best"] else " "
        if "invalid" in row:
            print(f"  {row['overrides']}: invalid ({'; '.join(row['invalid'])})")
            continue
        print(
            f"{mark} {row['overrides'] or 'defaults'}: {row['runs_meeting_target']} runs >= "
            f"target, mean attainment {row['mean_attainment']:.4f}, mean GPU-h/oracle "
            f"{row['mean_oracle_ratio']:.2f}"
        )
    return 0


def _report(args: argparse.Namespace) -> int:
    document = json.loads(args.bench_path.read_text())
    sweeps = [{"title": p.stem, **json.loads(p.read_text())} for p in args.sweep_paths]
    out: Path = args.out
    img_dir: Path = args.img_dir or out.parent / "img"
    notes = args.notes.read_text() if args.notes and args.notes.exists() else ""
    write_report(
        document,
        out,
        img_dir,
        sweeps=sweeps,
        notes=notes,
        sources={"bench": str(args.bench_path), "sweeps": [str(p) for p in args.sweep_paths]},
    )
    print(f"wrote {out} and plots under {img_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
