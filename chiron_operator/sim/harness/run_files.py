"""What `chiron-sim run` writes into its `--out` directory, and the line it prints.

- `summary.json`: the run's headline numbers (the bench's per-policy record), attainment per
  class, the oracle's lower bound, and every scale event: a role's replicas or batch size
  (--max-num-seqs) changed by a decision, with the decision's reason;
- `decisions.jsonl`: one JSON object per control tick: what the policy decided per role, why
  (the `Reason` of each value), the pool it saw (ready, starting, running) and its signals;
- `requests.csv`, `ticks.csv`: every request's fate and every tick, flat (`sim.records`);
- `load.png`, `replicas.png`, `batch_sizes.png`, `latency.png` (`plots.plot_run`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chiron_operator.core.enums import Role
from chiron_operator.sim.engine import SimResult
from chiron_operator.sim.harness.oracle import OracleResult
from chiron_operator.sim.harness.plots import plot_run
from chiron_operator.sim.harness.policies import PolicySpec
from chiron_operator.sim.harness.runs import finite_or_none, summary_metrics
from chiron_operator.sim.records import Summary, TickRecord, write_requests_csv, write_ticks_csv
from chiron_operator.sim.scenario import Scenario

# (what an event calls the value, the TickRecord field holding the decided value)
_SCALED = (("replicas", "desired"), ("max_num_seqs", "max_num_seqs"))


def write_run(
    out: Path,
    result: SimResult,
    scenario: Scenario,
    spec: PolicySpec,
    bound: OracleResult,
    *,
    plots: bool = True,
) -> dict[str, Any]:
    """Every file of a run into `out` (created); returns the summary document."""
    out.mkdir(parents=True, exist_ok=True)
    write_requests_csv(result.requests, out / "requests.csv")
    write_ticks_csv(result.ticks, out / "ticks.csv")
    write_decisions_jsonl(result.ticks, out / "decisions.jsonl")
    document = run_document(result, scenario.name, spec, bound)
    (out / "summary.json").write_text(json.dumps(document, indent=2) + "\n")
    if plots:
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
    return document


def run_document(
    result: SimResult, name: str, spec: PolicySpec, bound: OracleResult
) -> dict[str, Any]:
    """The summary JSON of one run (see the module docstring)."""
    summary = result.summary
    return {
        "scenario": name,
        "policy": spec.label,
        "policy_spec": dataclasses.asdict(spec),
        "seed": result.config.seed,
        "step_mode": result.config.step_mode.value,
        "horizon_s": result.config.horizon_s,
        "summary": summary_metrics(summary),
        "classes": class_attainment(summary),
        "oracle_gpu_hours": bound.gpu_hours,
        "oracle_peak_instances": bound.peak_instances,
        "gpu_hours_over_oracle": summary.gpu_hours / bound.gpu_hours,
        "scale_events": scale_events(result),
        "events": result.events,
        "wall_s": result.wall_s,
        "sim_requests_per_wall_s": summary.requests / max(result.wall_s, 1e-9),
    }


def class_attainment(summary: Summary) -> dict[str, dict[str, Any]]:
    """Requests and attainment per class (interactive: of the SLO; batch: of deadlines)."""
    return {
        "interactive": {
            "requests": summary.interactive_requests,
            "slo_attainment": finite_or_none(summary.interactive_slo_attainment),
            "ttft_p50_s": finite_or_none(summary.interactive_ttft_p50_s),
            "ttft_p95_s": finite_or_none(summary.interactive_ttft_p95_s),
            "itl_p50_s": finite_or_none(summary.interactive_itl_p50_s),
            "itl_p95_s": finite_or_none(summary.interactive_itl_p95_s),
        },
        "batch": {
            "requests": summary.batch_requests,
            "deadline_attainment": finite_or_none(summary.batch_deadline_attainment),
        },
    }


def scale_events(result: SimResult) -> list[dict[str, Any]]:
    """Every decided change of a role's replicas or --max-num-seqs, in time order.

    A change is against the previous tick's decision (the run's starting pool before the
    first tick); its reason is the decision's for that value.
    """
    config = result.config
    before: dict[str, Mapping[Role, int]] = {
        "replicas": config.initial_replicas,
        "max_num_seqs": config.initial_max_num_seqs,
    }
    events: list[dict[str, Any]] = []
    for tick in result.ticks:
        for what, field in _SCALED:
            decided: Mapping[Role, int] = getattr(tick, field)
            for role in Role:
                old, new = before[what].get(role, 0), decided.get(role, 0)
                if new != old:
                    events.append(_event(tick, role, what, old, new))
            before[what] = decided
    return events


def _event(tick: TickRecord, role: Role, what: str, old: int, new: int) -> dict[str, Any]:
    return {
        "time_s": tick.time_s,
        "role": role.value,
        "what": what,
        "from": old,
        "to": new,
        "reason": tick.reasons.get(f"{role.value}.{what}", ""),
    }


def decision_row(tick: TickRecord) -> dict[str, Any]:
    """One tick as a JSON object (roles by name; unknown numbers as null)."""

    def roles(values: Mapping[Role, int]) -> dict[str, int]:
        return {role.value: values.get(role, 0) for role in Role}

    return {
        "time_s": tick.time_s,
        "desired": roles(tick.desired),
        "max_num_seqs": roles(tick.max_num_seqs),
        "reasons": dict(tick.reasons),
        "ready": roles(tick.ready),
        "starting": roles(tick.starting),
        "running": roles(tick.running),
        "arrivals_per_s": tick.arrivals_per_s,
        "in_system": tick.in_system,
        "pool_queue": tick.pool_queue,
        "batch_queue": tick.batch_queue,
        "observations": {k: finite_or_none(v) for k, v in tick.observations.items()},
    }


def write_decisions_jsonl(ticks: Sequence[TickRecord], path: Path) -> None:
    """One `decision_row` per line."""
    with path.open("w") as f:
        for tick in ticks:
            f.write(json.dumps(decision_row(tick)) + "\n")


def summary_line(document: Mapping[str, Any]) -> str:
    """The run in one line: attainments, cost against the oracle, actions, speed."""
    s = document["summary"]

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    return (
        f"{document['scenario']} / {document['policy']}: interactive SLO "
        f"{pct(s['interactive_slo_attainment'])}, batch deadlines "
        f"{pct(s['batch_deadline_attainment'])}, {s['gpu_hours']:.2f} GPU-h "
        f"({document['gpu_hours_over_oracle']:.2f}x oracle {document['oracle_gpu_hours']:.2f}), "
        f"{s['scaling_actions']} scaling actions, {s['restarts']} restarts; "
        f"{document['sim_requests_per_wall_s']:,.0f} simulated requests per wall s"
    )
