"""docs/BENCHMARKS.md from a bench JSON (and Chiron sweep JSONs): tables, goals, plots.

Everything in the report is computed from the documents it is given, so regenerating it
(`make bench`) never leaves a stale number. Hand-written analysis, if any, comes from a notes
file included verbatim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f}%"


def _num(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


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
    return Goal(scenario, goal, f">= {_pct(GOAL_ATTAINMENT)}", _pct(value), met, gap)


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
            f"no baseline reaches {_pct(reached)}; {ratio:.2f}x the closest ({name}, "
            f"{_pct(attained)})"
        )
        met = True if ratio <= GOAL_BASELINE_RATIO else None
        return Goal(scenario, goal, target, measured, met, "dominates" if ratio <= 1 else "")
    name, gpu_hours = best
    ratio = chiron["gpu_hours"] / gpu_hours
    met = ratio <= GOAL_BASELINE_RATIO
    gap = "" if met else f"{ratio / GOAL_BASELINE_RATIO - 1:+.0%} over"
    return Goal(scenario, goal, target, f"{ratio:.2f}x ({name})", met, gap)


def scenario_table(scenario: Mapping[str, Any]) -> list[str]:
    """The scenario's policy table in Markdown."""
    oracle = scenario["oracle_gpu_hours"]
    policies = scenario["policies"]
    lines = [
        "| policy | interactive SLO | batch deadlines | GPU-h | x oracle | x best baseline "
        "at equal attainment | scaling actions | restarts (pods) | TTFT p95 s | ITL p95 s "
        "| longest recovery s |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in policies.items():
        best = best_baseline_at(policies, attainment(m), name)
        versus = (
            "none reaches it" if best is None else (f"{m['gpu_hours'] / best[1]:.2f}x ({best[0]})")
        )
        ttft = m.get("interactive_ttft_p95_s")
        itl = m.get("interactive_itl_p95_s")
        lines.append(
            f"| {'**' + name + '**' if name == CHIRON else name} "
            f"| {_pct(m['interactive_slo_attainment'])} | {_pct(m['batch_deadline_attainment'])} "
            f"| {_num(m['gpu_hours'])} | {m['gpu_hours'] / oracle:.2f}x | {versus} "
            f"| {m['scaling_actions']} | {m['restarts']} ({m.get('pod_restarts', 0)}) "
            f"| {'n/a' if ttft is None else _num(ttft)} | {'n/a' if itl is None else _num(itl, 3)}"
            f" | {m.get('longest_recovery_s', 0):.0f} |"
        )
    lines.append(f"| *oracle (lower bound)* | | | {_num(oracle)} | 1.00x | | | | | | |")
    return lines


def llumnix_sweep_table(scenario: Mapping[str, Any]) -> list[str]:
    sweep = scenario["llumnix_sweep"]
    lines = [
        "| scale up below | scale down above | interactive SLO | batch deadlines | GPU-h "
        "| chosen |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    for index, row in enumerate(sweep["rows"]):
        lines.append(
            f"| {row['scale_up_freeness_blocks']:g} | {row['scale_down_freeness_blocks']:g} "
            f"| {_pct(row['interactive_slo_attainment'])} "
            f"| {_pct(row['batch_deadline_attainment'])} "
            f"| {_num(row['gpu_hours'])} | {'yes' if index == sweep['chosen'] else ''} |"
        )
    return lines


def static_sweep_table(scenario: Mapping[str, Any]) -> list[str]:
    sweep = scenario["static_sweep"]
    lines = [
        "| instances | interactive SLO | batch deadlines | GPU-h | chosen |",
        "|---:|---:|---:|---:|:---:|",
    ]
    for row in sweep["rows"]:
        chosen = "yes" if row["replicas"] == sweep["chosen_replicas"] else ""
        lines.append(
            f"| {row['replicas']} | {_pct(row['interactive_slo_attainment'])} "
            f"| {_pct(row['batch_deadline_attainment'])} | {_num(row['gpu_hours'])} | {chosen} |"
        )
    return lines


def chiron_sweep_section(sweep: Mapping[str, Any]) -> list[str]:
    """One Chiron sweep as Markdown: every override set with its score."""
    scenarios = ", ".join(sweep["scenarios"])
    seeds = ", ".join(str(s) for s in sweep["seeds"])
    params = "; ".join(
        f"`{p['path']}` in {{{', '.join(str(v) for v in p['values'])}}}" for p in sweep["params"]
    )
    lines = [
        f"{sweep['mode'].capitalize()} over {params}; scenarios {scenarios}"
        f"{' (quick variants)' if sweep['quick'] else ''}; training seeds {seeds}. Score: runs "
        f"reaching {_pct(sweep['target_attainment'])} on both classes (more is better), then mean "
        "GPU-hours over the oracle (less is better).",
        "",
        "| overrides | runs at target | mean attainment | mean GPU-h / oracle | best |",
        "|---|---:|---:|---:|:---:|",
    ]
    for index, row in enumerate(sweep["rows"]):
        overrides = ", ".join(f"`{k}={v}`" for k, v in row["overrides"].items()) or "defaults"
        if "invalid" in row:
            lines.append(f"| {overrides} | rejected by the pool's rules | | | |")
            continue
        lines.append(
            f"| {overrides} | {row['runs_meeting_target']}/{len(row['runs'])} "
            f"| {_pct(row['mean_attainment'])} | {row['mean_oracle_ratio']:.3f} "
            f"| {'yes' if index == sweep['best'] else ''} |"
        )
    return lines


def _speed_line(document: Mapping[str, Any]) -> str:
    probe = document.get("speed_probe") or {}
    text = (
        f"Simulator speed (fast mode): **{document['sim_requests_per_wall_s']:,.0f} simulated "
        "requests per wall second**"
    )
    if probe:
        walls = ", ".join(f"{w:.2f}" for w in probe["walls_s"])
        text += (
            f", the best of {len(probe['walls_s'])} serial runs of {probe['policy']} on "
            f"{probe['scenario']} ({probe['requests']:,} requests, {probe['events']:,} events; "
            f"walls {walls} s)"
        )
    overall = document.get("all_runs_requests_per_wall_s")
    if overall:
        text += (
            f". Over all {document['runs']} bench runs, {document['simulated_requests']:,} "
            f"requests in {document['simulated_wall_s']:.1f} s of event-loop wall time "
            f"({overall:,.0f} per second, {document['jobs']} runs in parallel on "
            f"{document.get('cpu_count')} cores shared with other work)"
        )
    return text + "."


def render(
    document: Mapping[str, Any],
    *,
    image_paths: Mapping[str, str],
    sweeps: Sequence[Mapping[str, Any]] = (),
    notes: str = "",
    sources: Mapping[str, Any] | None = None,
) -> str:
    """The report's Markdown; `image_paths` maps plot keys to paths relative to the report."""
    quick = " (quick variants)" if document.get("quick") else ""
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`chiron-sim bench` then `chiron-sim report`); do not edit by "
        "hand. Every number below comes from one bench run"
        f"{quick}: evaluation seed {document['seed']}, training seed "
        f"{document['training_seed']} for the tuned Llumnix, {document['runs']} simulations in "
        f"{document['bench_wall_s']:.0f} s wall on {document['jobs']} worker(s).",
        "",
        "Policies: **chiron** (the pool's tuning, class-aware routing); **static** (peak "
        "provisioning with hindsight: the fewest instances, warm from the start, that reach 99% "
        "on the training seed); **hpa** (KV-cache usage, "
        "target 70%); **keda** (waiting requests per replica); **kpa** (Knative concurrency); "
        "**llumnix** (KV freeness, default thresholds) and **llumnix-tuned** (thresholds swept per "
        "scenario on the training seed). Baselines route uniformly over one mixed role with the "
        "pool's total instance bounds and a fixed batch size (see `chiron_operator/sim/"
        "policies.py`). The oracle is an offline lower bound on GPU-hours (see `chiron_operator/"
        "sim/oracle.py`). Attainment: share of interactive requests meeting both TTFT and mean-ITL "
        "SLOs, and of batch requests finished by their deadline; dropped or unfinished requests "
        'miss. "x best baseline at equal attainment" compares a policy with the cheapest '
        "*baseline* reaching at least its attainment (the lower of its two classes).",
        "",
        f"![GPU-hours against attainment]({image_paths['summary']})",
        "",
        "## Goals",
        "",
        "| scenario | goal | target | measured | verdict | by how much |",
        "|---|---|---|---|:---:|---|",
    ]
    for goal in goals(document):
        verdict = "n/a" if goal.met is None else ("PASS" if goal.met else "MISS")
        lines.append(
            f"| {goal.scenario} | {goal.goal} | {goal.target} | {goal.measured} | {verdict} "
            f"| {goal.gap} |"
        )
    lines += [
        "",
        _speed_line(document),
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    lines += ["## Results per scenario", ""]
    for scenario in document["scenarios"]:
        lines += [
            f"### {scenario['name']}",
            "",
            scenario["description"],
            "",
            f"{scenario['requests']:,} requests over {scenario['horizon_s']:.0f} s; oracle "
            f"{scenario['oracle_gpu_hours']:.2f} GPU-h (peak {scenario['oracle_peak_instances']}"
            f" instances, floor {scenario['oracle_floor_instances']}).",
            "",
            *scenario_table(scenario),
            "",
            f"![instances over time]({image_paths[scenario['name']]})",
            "",
        ]
    lines += _sweeps_section(document, sweeps)
    if sources:
        lines += ["## Sources", ""]
        lines += [f"- {key}: `{value}`" for key, value in sources.items() if value]
        lines.append("")
    return "\n".join(lines)


def _sweeps_section(document: Mapping[str, Any], sweeps: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "## Sweeps",
        "",
        "### Tuned Llumnix (per scenario, training seed)",
        "",
        "The chosen thresholds are the cheapest meeting 99% on both classes on the training "
        "seed, else those with the highest attainment; they are then evaluated on the "
        "evaluation seed in the tables above.",
        "",
    ]
    for scenario in document["scenarios"]:
        lines += [f"#### {scenario['name']}", "", *llumnix_sweep_table(scenario), ""]
    lines += [
        "### Static provisioning (per scenario, training seed)",
        "",
        "Counts bracketed between the oracle's peak and the baselines' maximum; the fewest "
        "reaching 99% on both classes is chosen (the maximum when none does).",
        "",
    ]
    for scenario in document["scenarios"]:
        lines += [f"#### {scenario['name']}", "", *static_sweep_table(scenario), ""]
    if sweeps:
        lines += ["### Chiron's tunables", ""]
        for sweep in sweeps:
            if sweep.get("title"):
                lines += [f"#### {sweep['title']}", ""]
            if sweep.get("context"):
                lines += [str(sweep["context"]), ""]
            lines += [*chiron_sweep_section(sweep), ""]
    return lines


def write_report(
    document: Mapping[str, Any],
    out: Path,
    img_dir: Path,
    *,
    sweeps: Sequence[Mapping[str, Any]] = (),
    notes: str = "",
    sources: Mapping[str, Any] | None = None,
) -> Path:
    """Plot into `img_dir` and write the Markdown report to `out`."""
    from chiron_operator.sim.plots import (  # noqa: PLC0415 -- matplotlib only when reporting
        plot_bench_instances,
        plot_bench_summary,
    )

    img_dir.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = {"summary": plot_bench_summary(document, img_dir / "bench-summary.png")}
    for scenario in document["scenarios"]:
        images[scenario["name"]] = plot_bench_instances(
            scenario, img_dir / f"bench-{scenario['name']}.png"
        )
    relative = {key: _relative(path, out.parent) for key, path in images.items()}
    out.write_text(
        render(document, image_paths=relative, sweeps=sweeps, notes=notes, sources=sources)
    )
    return out


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
