"""The benchmark report's tables: per-scenario policy results and every sweep, in Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chiron_operator.sim.harness.adoption import DOMINANT_COST_RATIO
from chiron_operator.sim.harness.report_goals import (
    NOT_BASELINES,
    attainment,
    best_baseline_at,
    pct,
)


def num(value: float, digits: int = 2) -> str:
    """A number with `digits` decimals."""
    return f"{value:.{digits}f}"


def scenario_section(scenario: Mapping[str, Any], image_path: str) -> list[str]:
    """One scenario's results: its workload and oracle, the policy table and its plot."""
    return [
        f"### {scenario['name']}",
        "",
        scenario["description"],
        "",
        f"{scenario['requests']:,} requests over {scenario['horizon_s']:.0f} s; oracle "
        f"{scenario['oracle_gpu_hours']:.2f} GPU-h (peak {scenario['oracle_peak_instances']}"
        f" instances, floor {scenario['oracle_floor_instances']}). {_hindsight_line(scenario)}",
        "",
        *scenario_table(scenario),
        "",
        f"![instances over time]({image_path})",
        "",
    ]


def _hindsight_line(scenario: Mapping[str, Any]) -> str:
    search = scenario["hindsight_search"]
    reference = scenario["hindsight"]
    reached = "reaches 99%" if search["reached_target"] else "no schedule reaches 99%"
    return (
        f"Hindsight search: {len(search['rows'])} schedules simulated (factor on the fluid need, "
        f"lead {search['lead_s']:.0f} s), the best at factor {search['chosen_factor']:g} "
        f"({reached}); the reference is the {reference['source']} one."
    )


def scenario_table(scenario: Mapping[str, Any]) -> list[str]:
    """The scenario's policy table in Markdown, the two references last."""
    oracle = scenario["oracle_gpu_hours"]
    reference = scenario["hindsight"]
    policies = scenario["policies"]
    lines = [
        "| policy | interactive SLO | batch deadlines | GPU-h | x hindsight | x oracle "
        "| x best baseline at equal attainment | scaling actions | restarts (pods) "
        "| TTFT p95 s | ITL p95 s | longest recovery s |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in policies.items():
        best = best_baseline_at(policies, attainment(m), name)
        versus = (
            "none reaches it" if best is None else (f"{m['gpu_hours'] / best[1]:.2f}x ({best[0]})")
        )
        ttft = m.get("interactive_ttft_p95_s")
        itl = m.get("interactive_itl_p95_s")
        lines.append(
            f"| {'**' + name + '**' if name in NOT_BASELINES else name} "
            f"| {pct(m['interactive_slo_attainment'])} | {pct(m['batch_deadline_attainment'])} "
            f"| {num(m['gpu_hours'])} | {m['gpu_hours'] / reference['gpu_hours']:.2f}x "
            f"| {m['gpu_hours'] / oracle:.2f}x | {versus} "
            f"| {m['scaling_actions']} | {m['restarts']} ({m.get('pod_restarts', 0)}) "
            f"| {'n/a' if ttft is None else num(ttft)} | {'n/a' if itl is None else num(itl, 3)}"
            f" | {m.get('longest_recovery_s', 0):.0f} |"
        )
    lines.append(
        f"| *hindsight reference ({reference['source']})* "
        f"| {pct(reference['interactive_slo_attainment'])} "
        f"| {pct(reference['batch_deadline_attainment'])} | {num(reference['gpu_hours'])} "
        f"| 1.00x | {reference['gpu_hours'] / oracle:.2f}x | | | | | | |"
    )
    lines.append(f"| *oracle (fluid bound)* | | | {num(oracle)} | | 1.00x | | | | | | |")
    return lines


def _search_table(
    tried: Sequence[str], rows: Sequence[tuple[Sequence[str], Mapping[str, Any], bool]]
) -> list[str]:
    """A search's table: the columns naming what was tried, then its attainments, GPU-hours
    and whether the search chose it. `rows` are (tried values, metrics, chosen)."""
    header = [*tried, "interactive SLO", "batch deadlines", "GPU-h", "chosen"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * (len(header) - 1) + ":---:|"]
    for values, row, chosen in rows:
        cells = [
            *values,
            pct(row["interactive_slo_attainment"]),
            pct(row["batch_deadline_attainment"]),
            num(row["gpu_hours"]),
            "yes" if chosen else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def hindsight_search_table(scenario: Mapping[str, Any]) -> list[str]:
    """The scenario's hindsight search: every schedule simulated, the chosen one marked."""
    search = scenario["hindsight_search"]
    rows = [
        ([f"{r['factor']:g}"], r, r["factor"] == search["chosen_factor"]) for r in search["rows"]
    ]
    return _search_table(["factor on fluid need"], rows)


def llumnix_sweep_table(scenario: Mapping[str, Any]) -> list[str]:
    """The scenario's tuned-Llumnix sweep: every threshold pair tried, the chosen one marked."""
    sweep = scenario["llumnix_sweep"]
    rows = [
        (
            [f"{r['scale_up_freeness_blocks']:g}", f"{r['scale_down_freeness_blocks']:g}"],
            r,
            index == sweep["chosen"],
        )
        for index, r in enumerate(sweep["rows"])
    ]
    return _search_table(["scale up below", "scale down above"], rows)


def static_sweep_table(scenario: Mapping[str, Any]) -> list[str]:
    """The scenario's static search: every instance count tried, the chosen one marked."""
    sweep = scenario["static_sweep"]
    rows = [
        ([str(r["replicas"])], r, r["replicas"] == sweep["chosen_replicas"]) for r in sweep["rows"]
    ]
    return _search_table(["instances"], rows)


def chiron_sweep_section(sweep: Mapping[str, Any]) -> list[str]:
    """One Chiron sweep as Markdown: every override set with its score."""
    scenarios = ", ".join(sweep["scenarios"])
    seeds = ", ".join(str(s) for s in sweep["seeds"])
    params = "; ".join(
        f"`{p['path']}` in {{{', '.join(str(v) for v in p['values'])}}}" for p in sweep["params"]
    )
    lines = [
        f"{sweep['mode'].capitalize()} over {params}; scenarios {scenarios}"
        f"{' (quick variants)' if sweep['quick'] else ''}; training seeds {seeds}. "
        f"{_rule_text(str(sweep.get('adoption_rule', '')))}",
        "",
        "| overrides | runs at target | worst run | worst regret | mean attainment "
        "| mean GPU-h / oracle | adopted |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    # A round's pick that failed the check on unseen scenarios (or was set aside) says so.
    mark = "yes" if sweep.get("adopted", True) else "picked, not adopted"
    for index, row in enumerate(sweep["rows"]):
        lines.append(_sweep_row_line(row, mark if index == sweep["best"] else ""))
    dominating = sweep.get("dominant")
    if dominating is not None:
        row = sweep["rows"][dominating]
        name = ", ".join(f"`{k}={v}`" for k, v in row["overrides"].items())
        lines += ["", f"Dominates the defaults (behind them on no run, ahead on some): {name}."]
    if sweep.get("decision"):
        lines += ["", f"Decision: {sweep['decision']}"]
    lines += _leave_one_out_lines(sweep)
    return lines


def _rule_text(rule: str) -> str:
    """The adoption rule a round ran under, in words."""
    if not rule.startswith("worst regret"):
        return (
            "Adopted (rule of that round): no run losing more than a quarter of a point against "
            "the defaults, at most 2% more mean GPU-hours over the oracle, then the best mean."
        )
    leximin = (
        " then, among those, the smallest regrets behind the worst, rank by rank (leximin),"
        if "leximin" in rule
        else ""
    )
    dominance = (
        " When that keeps the defaults or its gain does not hold on unseen scenarios, a set that"
        " dominates the defaults (behind on no run, ahead on some, at most"
        f" {DOMINANT_COST_RATIO - 1:.0%} more GPU-hours) is adopted."
        if "dominance" in rule
        else ""
    )
    return (
        "Adopted: the smallest worst regret (the largest shortfall, over every run, against the "
        f"best attainment any set reached on that run),{leximin} the defaults when tied within a "
        "quarter of a point, else the cheapest of the tied (see `chiron_operator/sim/harness/"
        f"adoption.py`).{dominance}"
    )


def _sweep_row_line(row: Mapping[str, Any], mark: str) -> str:
    overrides = ", ".join(f"`{k}={v}`" for k, v in row["overrides"].items()) or "defaults"
    if "invalid" in row:
        return f"| {overrides} | rejected by the pool's rules | | | | | |"
    worst = min(row["runs"], key=lambda r: r["attainment"])
    regret = row.get("worst_regret")
    return (
        f"| {overrides} | {row['runs_meeting_target']}/{len(row['runs'])} "
        f"| {pct(worst['attainment'])} ({worst['scenario']}) "
        f"| {'n/a' if regret is None else f'{100 * regret:.2f} pts'} "
        f"| {pct(row['mean_attainment'])} | {row['mean_oracle_ratio']:.3f} "
        f"| {mark} |"
    )


def _leave_one_out_lines(sweep: Mapping[str, Any]) -> list[str]:
    found = sweep.get("leave_one_out")
    if not found:
        return []
    lines = [
        "",
        "Leave-one-out: the set the rule adopts without each scenario, and its regret there.",
        "",
        "| scenario left out | adopted without it | its regret on the scenario |",
        "|---|---|---:|",
    ]
    for entry in found:
        overrides = sweep["rows"][entry["chosen"]]["overrides"]
        name = ", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "defaults"
        lines.append(
            f"| {entry['left_out']} | {name} | {100 * entry['regret_on_left_out']:.2f} pts |"
        )
    return lines


def sweeps_section(document: Mapping[str, Any], sweeps: Sequence[Mapping[str, Any]]) -> list[str]:
    """The sweeps: tuned Llumnix and static per scenario, then Chiron's (`sweeps`)."""
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
    lines += [
        "### Hindsight reference (per scenario, evaluation seed)",
        "",
        "Schedules ceil(factor x the fluid bound's per-bin need), widened a minute either side, "
        "clipped to the pool's bounds and started a cold start ahead; the factor bracketed "
        "from 1 up to the pool's maximum at the busiest bin, then refined twice between the "
        "largest factor missing 99% and the smallest reaching it.",
        "",
    ]
    for scenario in document["scenarios"]:
        lines += [f"#### {scenario['name']}", "", *hindsight_search_table(scenario), ""]
    if sweeps:
        lines += ["### Chiron's tunables", ""]
        for sweep in sweeps:
            if sweep.get("title"):
                lines += [f"#### {sweep['title']}", ""]
            if sweep.get("context"):
                lines += [str(sweep["context"]), ""]
            lines += [*chiron_sweep_section(sweep), ""]
    return lines
