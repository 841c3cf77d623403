"""Every interactive-scaling rule shape session 8 measured, on one attainment / GPU-hour plot.

    .venv/bin/python docs/benchmarks/experiments/frontier.py      # about 5 minutes on 2 cores
    .venv/bin/python docs/benchmarks/experiments/frontier.py --plot-only   # redraw the plot

Runs Chiron (its defaults, evaluation seed 0) on the packaged scenarios and on generated sets 0,
2, 3, 4 and 5 (20 scenarios each, `chiron-sim robustness --seed S` draws the same ones), once per
variant, and writes docs/benchmarks/frontier.json and docs/img/frontier.png. A variant is either
plain overrides of the pool's tuning or a small in-process patch of one policy function (the
patches below); none of the patched variants is in the product. docs/TUNING.md reads the plot.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from chiron_operator.control import chiron, global_scaling, interactive_scaling
from chiron_operator.control.pool_view import fresh_pods, hold_all, interactive_load, mean_itl_s
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.sim.harness import runs
from chiron_operator.sim.harness.generator import generate, write_scenarios
from chiron_operator.sim.harness.policies import PolicySpec
from chiron_operator.sim.harness.report_goals import attainment

ROOT = Path(__file__).resolve().parents[3]
GENERATED_SEEDS = (0, 2, 3, 4, 5)
TARGET = 0.99


# --- patches: each replaces one function of the policy, in the worker process only ----------


def _scale_in_to_tracked_load(memory_s: float) -> None:
    """Scale-in follows the band's middle every tick, not only below the band: the pool keeps
    ceil(peak busy / middle) instances, the peak decaying with time constant `memory_s` (0: the
    load now). Scale-out is the defaults' rule."""
    original = global_scaling.decide_interactive
    memory = {"t": -1.0, "peak": 0.0}

    def decide(snapshot: Any, tuning: Any, busy: float, sampled: int) -> Any:
        now = snapshot.now_s
        if now < memory["t"]:
            memory["peak"] = 0.0  # the next scenario in this worker
        dt = now - memory["t"] if memory["t"] >= 0 else 0.0
        decay = math.exp(-dt / memory_s) if memory_s > 0 else 0.0
        memory["peak"], memory["t"] = max(busy, memory["peak"] * decay), now
        roles = [r for r in (Role.INTERACTIVE, Role.MIXED) if interactive_scaling.allowed(tuning, r)]
        knobs = tuning.global_scaling
        if not roles or sampled == 0 or busy / sampled > knobs.ibp_high_ratio:
            return original(snapshot, tuning, busy, sampled)
        middle = (knobs.ibp_low_ratio + knobs.ibp_high_ratio) / 2
        surplus = sampled - max(1, math.ceil(memory["peak"] / middle - 1e-9))
        if surplus <= 0:
            return hold_all(snapshot, roles, Reason.INTERACTIVE_BACKPRESSURE_IN_BAND, "tracked")
        verdicts = hold_all(snapshot, roles, Reason.INTERACTIVE_BACKPRESSURE_LOW, "tracked")
        for role, n in interactive_scaling._removals(snapshot, tuning, roles, surplus).items():
            current = snapshot.role(role).replicas
            verdicts[role] = Verdict(current - n, Reason.INTERACTIVE_BACKPRESSURE_LOW, "tracked")
        return verdicts

    global_scaling.decide_interactive = decide


def _busy_against_role_max(ceiling_seqs: int) -> None:
    """A pod below 90% of its gateway cap is judged against the role's max instead (the cap of
    a pod the local controller never grew is its initial size, not what it can run)."""
    original = global_scaling.interactive_backpressure_counts

    def counts(snapshot: Any, ratio: float, staleness_s: float, slo: Any, itl_ratio: float) -> Any:
        roles = {}
        for role, found in snapshot.roles.items():
            if role in (Role.INTERACTIVE, Role.MIXED):
                pods = tuple(
                    p
                    if p.running_requests >= 0.9 * p.max_num_seqs
                    else replace(p, max_num_seqs=max(p.max_num_seqs, ceiling_seqs))
                    for p in found.pods
                )
                found = replace(found, pods=pods)
            roles[role] = found
        return original(replace(snapshot, roles=roles), ratio, staleness_s, slo, itl_ratio)

    global_scaling.interactive_backpressure_counts = counts


def _scale_out_needs_pressure(share: float) -> None:
    """The band's scale-out only while some pod shows pressure: a queue, a pod within 10% of its
    cap, or TTFT or mean ITL past `share` of its objective."""
    original = global_scaling.decide_interactive

    def pressed(snapshot: Any, tuning: Any) -> bool:
        slo, staleness_s = tuning.slo, tuning.guards.metrics_staleness_s
        itl_target_s = share * slo.interactive_itl_s * tuning.local.itl_target_ratio
        for role in (Role.INTERACTIVE, Role.MIXED):
            for pod in fresh_pods(snapshot, role, staleness_s):
                running, waiting = interactive_load(pod)
                if waiting > 0 or running >= 0.9 * max(pod.max_num_seqs, 1):
                    return True
                if pod.ttft_s > share * slo.interactive_ttft_s or mean_itl_s(pod) > itl_target_s:
                    return True
        return False

    def decide(snapshot: Any, tuning: Any, busy: float, sampled: int) -> Any:
        verdicts = original(snapshot, tuning, busy, sampled)
        grows = any(v.value > snapshot.role(r).replicas for r, v in verdicts.items())
        if grows and not pressed(snapshot, tuning):
            return hold_all(snapshot, list(verdicts), Reason.INTERACTIVE_BACKPRESSURE_IN_BAND, "")
        return verdicts

    global_scaling.decide_interactive = decide


def _busy_level_from_startup(fast_ratio: float, fast_s: float, slow_s: float) -> None:
    """The busy level moves from the defaults' (slow starts, or none seen yet) to `fast_ratio`
    as the learnt start-up time falls from `slow_s` to `fast_s`."""
    original = global_scaling.decide_global

    def decide(snapshot: Any, tuning: Any, state: Any) -> Any:
        knobs = tuning.global_scaling
        startup_s = state.startup_s if state.startup_s is not None else math.inf
        x = min(1.0, max(0.0, (slow_s - startup_s) / (slow_s - fast_s)))
        ratio = knobs.busy_running_ratio + (fast_ratio - knobs.busy_running_ratio) * x
        tuned = replace(tuning, global_scaling=replace(knobs, busy_running_ratio=ratio))
        return original(snapshot, tuned, state)

    global_scaling.decide_global = chiron.decide_global = decide


# --- variants --------------------------------------------------------------------------------

Overrides = tuple[tuple[str, Any], ...]
VARIANTS: dict[str, tuple[Overrides, Callable[[], None] | None]] = {
    "defaults": ((), None),
    "busy 0.45": ((("global.busyRunningRatio", 0.45),), None),
    "busy 0.6, high 0.8": (
        (("global.busyRunningRatio", 0.6), ("global.ibpHighRatio", 0.8)),
        None,
    ),
    "busy 0.6, band 0.2-0.8": (
        (
            ("global.busyRunningRatio", 0.6),
            ("global.ibpHighRatio", 0.8),
            ("global.ibpLowRatio", 0.2),
        ),
        None,
    ),
    "scale-in tracks load": ((), lambda: _scale_in_to_tracked_load(0.0)),
    "scale-in tracks 30-min peak": ((), lambda: _scale_in_to_tracked_load(1800.0)),
    "busy 0.6, tracks 60-min peak": (
        (("global.busyRunningRatio", 0.6),),
        lambda: _scale_in_to_tracked_load(3600.0),
    ),
    "busy judged at role max": ((), lambda: _busy_against_role_max(64)),
    "scale-out needs pressure": ((), lambda: _scale_out_needs_pressure(0.5)),
    "busy level from start-up time": ((), lambda: _busy_level_from_startup(0.6, 60.0, 180.0)),
    "batch prefills not paced": ((("gateway.batchPrefillsPerPod", 0),), None),
}


def _install(name: str) -> None:
    patch = VARIANTS[name][1]
    if patch is not None:
        patch()


def _scenario_paths(workdir: Path) -> list[str]:
    paths = [str(p) for p in runs.suite_paths(None)]
    for seed in GENERATED_SEEDS:
        out = workdir / f"gen{seed}"
        write_scenarios(generate(20, seed), out)
        paths += sorted(str(p) for p in out.glob("*.yaml"))
    return paths


def _run(name: str, paths: list[str]) -> dict[str, Any]:
    overrides = VARIANTS[name][0]
    policy = PolicySpec("chiron", overrides=overrides, defaults_only=True)
    requests = [runs.RunRequest(p, False, policy, runs.EVALUATION_SEED) for p in paths]
    with ProcessPoolExecutor(2, initializer=_install, initargs=(name,)) as pool:
        outcomes = list(pool.map(runs.execute, requests))
    reached = [attainment(o.metrics) for o in outcomes]
    return {
        "at_target": sum(a >= TARGET for a in reached),
        "runs": len(reached),
        "mean_attainment": sum(reached) / len(reached),
        "worst_attainment": min(reached),
        "gpu_hours": sum(o.metrics["gpu_hours"] for o in outcomes),
    }


def _plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    markers = "*osDv^<>phX"
    for i, (name, r) in enumerate(results.items()):
        label = f"{name}: {r['at_target']} at 99%, {r['gpu_hours']:,.0f} GPU-h"
        size = 160 if name == "defaults" else 60
        ax.scatter(r["gpu_hours"], r["at_target"], marker=markers[i % len(markers)], s=size,
                   label=label, zorder=3)
    runs_n = next(iter(results.values()))["runs"]
    ax.set_xlabel("GPU-hours over all runs")
    ax.set_ylabel(f"runs at 99% on both classes (of {runs_n})")
    ax.set_title("Interactive-scaling rule shapes: one attainment / GPU-hour curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    out = ROOT / "docs" / "benchmarks" / "frontier.json"
    if "--plot-only" in sys.argv[1:]:  # redraw from the recorded results
        _plot(json.loads(out.read_text())["variants"], ROOT / "docs" / "img" / "frontier.png")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        paths = _scenario_paths(Path(tmp))
        results: dict[str, dict[str, Any]] = {}
        for name in VARIANTS:
            results[name] = _run(name, paths)
            r = results[name]
            print(
                f"{name:32s} {r['at_target']:3d}/{r['runs']} at 99%, mean "
                f"{100 * r['mean_attainment']:.2f}%, worst {100 * r['worst_attainment']:.1f}%, "
                f"{r['gpu_hours']:.0f} GPU-h",
                flush=True,
            )
    out.write_text(json.dumps({"seed": runs.EVALUATION_SEED, "variants": results}, indent=1) + "\n")
    _plot(results, ROOT / "docs" / "img" / "frontier.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
