"""What the demo shows and leaves behind: the live table, the summary and the plot.

Everything here is measured, not modelled: latencies from the requests the demo's clients sent
and completed (TTFT and mean ITL against the pool's SLOs), replicas and batch sizes from the
pool's status sampled every second (the target the gateway applies, and the --max-num-seqs
ceiling whose changes restart pods), the gateway's load and counters from its metrics, scaling
actions from the operator's Events, and decisions from the records the operator keeps in status
(merged across samples, so none is lost to the history limit).

summary.json holds:
- `duration_s`, `time_scale`, `slo`: the run's length and the targets it was measured against;
- `scale_ups`, `scale_downs`: replica changes the operator applied (its Events);
  `batch_size_changes`: target moves the gateway applied plus `--max-num-seqs` changes;
  `batch_size_restarts`: the latter alone (each rolls a role's pods);
- `gateway`: the gateway's request counters by outcome, and its batch cut-offs;
- `interactive_*`: requests sent, completed, failed (by why), the share that met both latency
  SLOs (TTFT and mean ITL, a request still running at the end counts as a miss), TTFT p50/p95
  and mean-ITL p95, all measured by the client;
- `batch_requests`: the backlog's size; `batch_completed`: its requests answered in the batch's
  output file; `batch`: the batch as the Batch API reported it at the end (`status`,
  `request_counts` total/completed/failed, the lines of its output and error files,
  `met_deadline`);
- `batch_deadline_attainment`: requests whose line is in the output file and that completed by
  the deadline, over the backlog's size. The deadline is the batch's `expires_at` (its
  completion window from its creation). A batch whose last request was answered before it (the
  batch went `finalizing`) meets it for every output line; an expired batch's output lines are
  what ran before the gateway expired it; a batch that completed late counts what a read of it
  before its deadline showed completed. A batch never submitted meets it for none;
- `decisions`: the operator's decision records by reason; `max_ready_replicas` per role.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from chiron_operator.devcluster.demo.backlog import (
    NOT_SUBMITTED,
    TERMINAL,
    BatchProgress,
    BatchResult,
)
from chiron_operator.devcluster.demo.clients import InteractiveResult
from chiron_operator.devcluster.demo.workload import NAMESPACE, POOL, DemoPlan

ROLES: Final = ("interactive", "mixed", "batch")
CHANGE: Final = re.compile(r"^(\w+) (replicas|batchSize) (\d+) -> (\d+)")
SLACK_WINDOW_S: Final = 10.0
BOLD, RESET = "\x1b[1m", "\x1b[0m"
GATEWAY_OUTCOMES: Final = ("routed", "overflowed_to_mixed", "queued", "refused", "retried")


@dataclass(frozen=True, slots=True)
class RoleSample:
    """One role: replicas, batch size (`batch_size` the ceiling, `target_batch_size` what the
    gateway caps pods at), vLLM's running and waiting, and the gateway's requests in flight."""

    desired: int
    ready: int
    batch_size: int | None
    target_batch_size: int | None
    running: float
    waiting: float
    in_flight: float = 0.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The pool and the clients once a second (t_s: seconds from the start of traffic)."""

    t_s: float
    roles: Mapping[str, RoleSample]
    interactive_sent: int
    interactive_queued: int
    batch_queued: int
    batch_in_flight: int
    batch: BatchProgress | None  # the backlog's batch as last read; None before it exists
    last_reason: str
    signals: Mapping[str, Any]


def role_samples(
    status: Mapping[str, Any], load: Mapping[str, tuple[float, float, float]]
) -> dict[str, RoleSample]:
    """Per-role numbers from the pool's status and (running, waiting, gateway in flight)."""
    roles = status.get("roles") or {}
    out = {}
    for role in ROLES:
        found = roles.get(role) or {}
        running, waiting, in_flight = load.get(role, (0.0, 0.0, 0.0))
        out[role] = RoleSample(
            desired=int(found.get("desiredReplicas") or 0),
            ready=int(found.get("readyReplicas") or 0),
            batch_size=found.get("batchSizeSeqs"),
            target_batch_size=found.get("targetBatchSizeSeqs"),
            running=running,
            waiting=waiting,
            in_flight=in_flight,
        )
    return out


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _fmt(value: float, unit: str = "s", digits: int = 2) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f} {unit}".strip()


def interactive_stats(results: Sequence[InteractiveResult], plan: DemoPlan) -> dict[str, float]:
    done = [r.completion for r in results if r.completion is not None and r.completion.ok]
    ttft = [c.ttft_s for c in done if c.ttft_s is not None]
    itl = [c.mean_itl_s for c in done if c.mean_itl_s is not None]
    met = sum(r.met(plan.ttft_slo_s, plan.itl_slo_s) for r in results)
    return {
        "requests": float(len(results)),
        "completed": float(len(done)),
        "attainment": met / len(results) if results else math.nan,
        "ttft_p50_s": _pct(ttft, 50),
        "ttft_p95_s": _pct(ttft, 95),
        "itl_p50_s": _pct(itl, 50),
        "itl_p95_s": _pct(itl, 95),
    }


def render_table(sample: Sample, plan: DemoPlan, results: Sequence[InteractiveResult]) -> str:
    """The live view: per role replicas, batch size (target/ceiling), the gateway's requests in
    flight and queued, SLO slack; then the totals and the attainment so far."""
    head = f"{BOLD}Chiron demo{RESET}  t={sample.t_s:5.0f} s  phase: {plan.phase(sample.t_s)}"
    last = sample.last_reason or "-"
    lines = [head, f"pool {NAMESPACE}/{POOL} (Enforce)   last decision: {last}", ""]
    lines.append(
        f"{'role':<12} {'ready/desired':>13} {'batch target/ceiling':>21} {'in flight':>9} "
        f"{'queued':>7}  SLO slack (last {SLACK_WINDOW_S:.0f} s)"
    )
    slack = role_slack(sample.t_s, plan, results)
    deadline_left = plan.batch_at_s + plan.batch_deadline_s - sample.t_s
    queued = {"interactive": sample.interactive_queued, "mixed": sample.interactive_queued}
    queued["batch"] = sample.batch_queued
    for role in ROLES:
        r = sample.roles[role]
        size = f"{_size(r.target_batch_size)}/{_size(r.batch_size)}"
        if role == "batch":
            note = f"deadline in {deadline_left:.0f} s" if _outstanding(sample.batch) else "-"
        else:
            note = _slack_text(slack.get(role))
        replicas = f"{r.ready}/{r.desired}"
        lines.append(
            f"{role:<12} {replicas:>13} {size:>21} {r.in_flight:>9.0f} {queued[role]:>7d}  {note}"
        )
    return "\n".join([*lines, "", *_totals(sample, plan, results)])


def _size(value: int | None) -> str:
    return "-" if value is None else str(value)


def _outstanding(batch: BatchProgress | None) -> int:
    """Requests of the batch not answered yet (queued in the gateway or running on a pod)."""
    if batch is None or batch.status in TERMINAL:
        return 0
    return batch.total - batch.completed - batch.failed


def _batch_line(sample: Sample) -> str:
    batch = sample.batch or BatchProgress(sample.t_s, NOT_SUBMITTED, 0, 0, 0)
    return (
        f"batch        {batch.status:<13} queued {sample.batch_queued:5d}  "
        f"in flight {sample.batch_in_flight:4d}  done {batch.completed:5d}/{batch.total:<5d} "
        f"failed {batch.failed:4d}  "
        f"BBP {_ratio(sample.signals.get('batchBackpressureRatio'))}  "
        f"IBP {_ratio(sample.signals.get('interactiveBackpressureRatio'))}"
    )


def _totals(sample: Sample, plan: DemoPlan, results: Sequence[InteractiveResult]) -> list[str]:
    stats = interactive_stats(results, plan)
    return [
        f"interactive  sent {sample.interactive_sent:5d}  done {stats['completed']:5.0f}  "
        f"SLO met {_fmt(100 * stats['attainment'], '%', 1)}  "
        f"TTFT p95 {_fmt(stats['ttft_p95_s'])} (SLO {plan.ttft_slo_s:g} s)  "
        f"ITL p95 {_fmt(stats['itl_p95_s'], 's', 3)} (SLO {plan.itl_slo_s:g} s)",
        _batch_line(sample),
    ]


def batch_size_moves(samples: Sequence[Sample]) -> int:
    """How often a role's target batch size changed (what the gateway applied, no restart)."""
    moves = 0
    for role in ROLES:
        targets = [s.roles[role].target_batch_size for s in samples]
        known = [t for t in targets if t is not None]
        moves += sum(1 for a, b in itertools.pairwise(known) if a != b)
    return moves


def role_slack(
    t_s: float, plan: DemoPlan, results: Sequence[InteractiveResult]
) -> dict[str, float]:
    """1 - TTFT p95 / SLO per role, over interactive requests that arrived in the last window."""
    by_role: dict[str, list[float]] = {}
    for result in results:
        done = result.completion
        if done is None or done.ttft_s is None or result.spec.arrival_s < t_s - SLACK_WINDOW_S:
            continue
        by_role.setdefault(done.role, []).append(done.ttft_s)
    return {role: 1.0 - _pct(values, 95) / plan.ttft_slo_s for role, values in by_role.items()}


def _slack_text(slack: float | None) -> str:
    if slack is None:
        return "-"
    return f"TTFT {slack:+.2f}" + ("  (missed)" if slack < 0 else "")


def _ratio(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def scaling_actions(events: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Applied changes by kind (scale_ups, scale_downs, batch_size_changes), from Events."""
    counts: Counter[str] = Counter()
    for event in events:
        found = CHANGE.match(str(event.get("message") or ""))
        if event.get("type") != "Normal" or found is None:
            continue
        before, after = int(found.group(3)), int(found.group(4))
        if found.group(2) == "batchSize":
            counts["batch_size_changes"] += int(event.get("count") or 1)
        elif after > before:
            counts["scale_ups"] += int(event.get("count") or 1)
        elif after < before:
            counts["scale_downs"] += int(event.get("count") or 1)
    return counts


@dataclass
class DemoRecord:
    """Everything a demo run measured."""

    plan: DemoPlan
    samples: list[Sample] = field(default_factory=list)
    interactive: list[InteractiveResult] = field(default_factory=list)
    batch: BatchResult | None = None
    batch_total: int = 0
    decisions: dict[tuple[str, str, str], Mapping[str, Any]] = field(default_factory=dict)
    events: list[Mapping[str, Any]] = field(default_factory=list)
    gateway: dict[str, int] = field(default_factory=dict)

    def merge_decisions(self, status: Mapping[str, Any]) -> None:
        """Keep every decision record the status ever showed (it holds only the latest)."""
        for record in status.get("decisions") or []:
            key = (str(record["time"]), str(record["role"]), str(record["field"]))
            self.decisions[key] = record


def summarise(record: DemoRecord) -> dict[str, Any]:
    """summary.json: SLO and deadline attainment as measured, scaling from status and Events."""
    plan, samples = record.plan, record.samples
    stats = interactive_stats(record.interactive, plan)
    actions = scaling_actions(record.events)
    total = record.batch_total
    batch = record.batch or BatchResult(total, NOT_SUBMITTED)
    return {
        "duration_s": round(samples[-1].t_s, 1) if samples else 0.0,
        "time_scale": plan.time_scale,
        "slo": {
            "interactive_ttft_s": plan.ttft_slo_s,
            "interactive_itl_s": plan.itl_slo_s,
            "batch_deadline_s": plan.batch_deadline_s,
            "note": "latency SLOs are the example pool's divided by time_scale: the emulators "
            "report (and clients measure) real seconds of a time-scaled latency model",
        },
        "scale_ups": actions["scale_ups"],
        "scale_downs": actions["scale_downs"],
        # Target changes the gateway applied at once, plus ceiling changes (which restart pods).
        "batch_size_changes": batch_size_moves(samples) + actions["batch_size_changes"],
        # Rollouts of a role's pods for a new --max-num-seqs (each restarts every pod of it).
        "batch_size_restarts": actions["batch_size_changes"],
        "gateway": dict(record.gateway),
        "interactive_requests": len(record.interactive),
        "interactive_completed": int(stats["completed"]),
        "interactive_failed": _failures(record.interactive),
        "interactive_slo_attainment": _round(stats["attainment"]),
        "interactive_ttft_p50_s": _round(stats["ttft_p50_s"]),
        "interactive_ttft_p95_s": _round(stats["ttft_p95_s"]),
        "interactive_itl_p95_s": _round(stats["itl_p95_s"]),
        "batch_requests": total,
        "batch_completed": batch.output_lines,
        "batch_deadline_attainment": _round(batch.met_deadline / total) if total else None,
        "batch": batch_section(batch),
        "decisions": dict(
            Counter(str(d["reason"]) for d in record.decisions.values()).most_common()
        ),
        "max_ready_replicas": {
            role: max((s.roles[role].ready for s in samples), default=0) for role in ROLES
        },
    }


def batch_section(batch: BatchResult) -> dict[str, Any]:
    """The backlog's batch as the gateway's Batch API reported it, and its files' lines."""
    section: dict[str, Any] = {
        "id": batch.batch_id,
        "status": batch.status,
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "output_lines": batch.output_lines,
        "error_lines": batch.error_lines,
        "met_deadline": batch.met_deadline,
    }
    if batch.error:
        section["error"] = batch.error
    return section


def _failures(results: Sequence[InteractiveResult]) -> dict[str, int]:
    """Why requests did not complete: no ready endpoint, aborted by a terminating pod, ..."""
    reasons: Counter[str] = Counter()
    for result in results:
        done = result.completion
        if done is None:
            reasons["no ready endpoint"] += 1
        elif not done.ok:
            reasons[done.error or "no tokens"] += 1
    return dict(reasons.most_common())


def _round(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None
