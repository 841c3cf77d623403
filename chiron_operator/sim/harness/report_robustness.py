"""The report's "Robustness on generated scenarios" section, from a `chiron-sim robustness`
document (`robustness`): the per-policy table, the head-to-head counts against each baseline,
and one line per generated scenario."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chiron_operator.sim.harness.policies import STATIC
from chiron_operator.sim.harness.report_goals import (
    CHIRON,
    GOAL_ATTAINMENT,
    NOT_BASELINES,
    attainment,
    best_baseline_at,
    pct,
)
from chiron_operator.sim.harness.robustness import (
    ATTAINMENT_EPS,
    Outcome,
    PolicyRobustness,
    Worst,
    robustness_rows,
)


def robustness_section(document: Mapping[str, Any]) -> list[str]:
    """The whole section, as Markdown lines."""
    generated = document["generated"]
    rows = robustness_rows(document)
    lines = [
        "## Robustness on generated scenarios",
        "",
        f"{generated['count']} scenarios drawn by `chiron-sim robustness --count "
        f"{generated['count']} --seed {generated['seed']}` (`chiron_operator/sim/harness/"
        "generator.py`): a day compressed into 1-3 h with its peak at a random hour, 2-6x over "
        "its trough, and bursts of 2-5x for minutes; short (ShareGPT) or long (arXiv) contexts; "
        "batch backlogs of different sizes arriving at different hours, due minutes to hours "
        "later, or none; 8B and 70B pools with their cold-start presets; each pool's maximum "
        "sized to its load and everything else at the CRD's defaults. Chiron's defaults were "
        "never tuned on them. The same benchmark as above: baselines tuned on training seed "
        f"{document['training_seed']}, everything evaluated on seed {document['seed']}, "
        f"{document['runs']} simulations in {document['bench_wall_s']:.0f} s wall on "
        f"{document['jobs']} worker(s). Rerun one with `chiron-sim bench --scenario-file "
        f"{generated['out_dir']}/NAME.yaml`.",
        "",
        "Against every baseline on every scenario, at equal attainment (the lower of the two "
        "classes): a **win** reaches at least the baseline's attainment for fewer GPU-hours, or "
        "more for no more; a **loss** is the reverse; a **tie** is equal on both; anything else "
        "(more attainment for more GPU-hours, or less for less) is **incomparable**. Worst "
        "attainment gap: how far below the best other policy (capped at "
        f"{pct(GOAL_ATTAINMENT)}) it ends. The worst ratios name their scenario.",
        "",
        *robustness_table(rows),
        "",
        "Head to head against each baseline (wins / losses / ties / incomparable):",
        "",
        *head_to_head_table(rows),
        "",
        "Per scenario (Chiron with its gateway):",
        "",
        *generated_scenarios_table(document),
        "",
    ]
    return lines


def _worst(worst: Worst | None, unit: str) -> str:
    if worst is None:
        return "n/a"
    if unit == "points":
        value = max(worst.value, 0.0)
        return "none behind" if value == 0 else f"{100 * value:.2f} points ({worst.scenario})"
    return f"{worst.value:.2f}x ({worst.scenario})"


def _outcomes(counts: Mapping[Outcome, int]) -> str:
    return f"{counts['win']} / {counts['loss']} / {counts['tie']} / {counts['incomparable']}"


def robustness_table(rows: list[PolicyRobustness]) -> list[str]:
    """One row per policy: outcomes against the baselines, target, worst cases."""
    lines = [
        "| policy | vs baselines: win / loss / tie / incomparable "
        f"| {pct(GOAL_ATTAINMENT)} on both (of scenarios any policy does) "
        "| (of those any autoscaler does) "
        "| worst attainment gap | worst x best baseline at equal attainment "
        "| worst x hindsight reference |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for row in rows:
        name = f"**{row.policy}**" if row.policy in NOT_BASELINES else row.policy
        unmatched = (
            f"; no baseline reaches it on {row.no_baseline_reaches}"
            if row.no_baseline_reaches
            else ""
        )
        lines.append(
            f"| {name} | {_outcomes(row.totals())} | {row.at_target} of {row.reachable} "
            f"| {row.at_target_autoscaled} of {row.reachable_autoscaled} "
            f"| {_worst(row.worst_gap, 'points')} "
            f"| {_worst(row.worst_baseline_ratio, 'ratio')}{unmatched} "
            f"| {_worst(row.worst_hindsight_ratio, 'ratio')} |"
        )
    return lines


def head_to_head_table(rows: list[PolicyRobustness]) -> list[str]:
    """Wins / losses / ties / incomparable of each policy against each baseline."""
    baselines = [row.policy for row in rows if row.policy not in NOT_BASELINES]
    lines = [
        "| policy | " + " | ".join(f"vs {b}" for b in baselines) + " |",
        "|---|" + "---|" * len(baselines),
    ]
    for row in rows:
        cells = [_outcomes(row.outcomes[b]) if b in row.outcomes else "" for b in baselines]
        lines.append(f"| {row.policy} | " + " | ".join(cells) + " |")
    return lines


def _features(features: Mapping[str, Any]) -> str:
    context = (
        "short"
        if features["context"] == "short"
        else f"long ({100 * features['long_share']:.0f}% arXiv)"
    )
    batch = (
        "none"
        if not features["batch"]
        else f"{sum(features['backlogs']):,} in {len(features['backlogs'])}, "
        f"{features['deadline_scale']} deadlines"
    )
    return (
        f"{features['horizon_s'] / 3600:.1f} h, {features['peak_trough_ratio']:.1f}x, "
        f"{features['bursts']} | {context} | {batch}"
    )


def generated_scenarios_table(document: Mapping[str, Any]) -> list[str]:
    """One row per scenario: its features, Chiron's result and how many policies reach 99%."""
    features = document["generated"]["features"]
    lines = [
        "| scenario | profile | day (length, peak/trough, bursts) | context | batch "
        "| requests | chiron interactive | chiron batch | chiron GPU-h "
        "| x best baseline at equal attainment | x hindsight | policies at 99% "
        "(autoscalers) |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for scenario in document["scenarios"]:
        policies = scenario["policies"]
        chiron = policies[CHIRON]
        best = best_baseline_at(policies, attainment(chiron), CHIRON)
        versus = (
            "none reaches it"
            if best is None
            else f"{chiron['gpu_hours'] / best[1]:.2f}x ({best[0]})"
        )
        reference = scenario["hindsight"]
        hindsight = f"{chiron['gpu_hours'] / reference['gpu_hours']:.2f}x"
        if not reference["reached_target"]:
            hindsight += " (misses)"
        at_goal = [
            p for p, m in policies.items() if attainment(m) >= GOAL_ATTAINMENT - ATTAINMENT_EPS
        ]
        autoscaled = sum(p != STATIC for p in at_goal)
        lines.append(
            f"| {scenario['name']} | {scenario['profile']} "
            f"| {_features(features[scenario['name']])} "
            f"| {scenario['requests']:,} | {pct(chiron['interactive_slo_attainment'])} "
            f"| {pct(chiron['batch_deadline_attainment'])} | {chiron['gpu_hours']:.2f} "
            f"| {versus} | {hindsight} | {len(at_goal)} of {len(policies)} ({autoscaled}) |"
        )
    return lines
