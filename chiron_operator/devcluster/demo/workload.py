"""What the demo runs: its pool, its timeline and its traffic, all derived from real data.

The pool is deploy/examples/mixed-interactive-batch.yaml made small: the same model, roles,
SLOs and gateway, with bounds a laptop can run (at most 9 emulated pods), a 2 s control
interval and 1 s scrapes, a 5 s cold start, and the batch signals (queue per deadline, output
lengths of completed batch requests) read from the pool's gateway, the default.
Every role starts at its largest batch size: the gateway caps pods at the local controller's
target below it, so batch sizes move all the time and no pod restarts for it.

The timeline, in seconds from the start of traffic:
  0 .. surge_start      a quiet interactive baseline (the Azure conv trace, thinned);
  surge_start .. surge_end   a surge: the same trace at several times its rate, which
                        saturates the baseline pods and should make the pool add mixed pods;
  batch_at              a batch backlog (arXiv-summarisation lengths) is submitted through the
                        Batch API, its completion window `batch_deadline_s`; interactive
                        traffic is back to baseline;
  end                   traffic stops (the pool has had time to drain and scale down).

`time_scale` > 1 runs the emulators that much faster than the latency model: every latency the
pods report (and the client measures) shrinks by it, so the pool's latency SLOs are divided by
it as well. Cold starts are kept at the same wall-clock length.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np

from chiron_operator.sim.requests import RequestSpec
from chiron_operator.sim.workloads import azure_trace, batch_backlog

POOL: Final = "demo"
NAMESPACE: Final = "llm"
MODEL: Final = "meta-llama/Llama-3.1-8B-Instruct"
# The emulators' context limit; prompts and outputs are capped to fit it.
MAX_MODEL_LEN: Final = 4096
MAX_PROMPT: Final = 3000
MAX_INTERACTIVE_OUTPUT: Final = 256
MAX_BATCH_OUTPUT: Final = 384
TTFT_SLO_S: Final = 2.0
ITL_SLO_S: Final = 0.1


@dataclass(frozen=True, slots=True)
class DemoPlan:
    """The demo's timeline and load (seconds from the start of traffic)."""

    surge_start_s: float = 15.0
    surge_end_s: float = 60.0
    batch_at_s: float = 62.0
    batch_deadline_s: float = 55.0
    end_s: float = 130.0
    # The Azure conv trace replayed twice as fast; the phases thin or multiply it further.
    time_compress: float = 2.0
    baseline_rate_scale: float = 0.2
    surge_rate_scale: float = 1.0
    batch_requests: int = 600
    cold_start_s: float = 5.0
    time_scale: float = 1.0
    seed: int = 7

    def scaled(self, factor: float) -> DemoPlan:
        """The same story in `factor` times the time (a shorter or longer demo)."""
        return replace(
            self,
            surge_start_s=self.surge_start_s * factor,
            surge_end_s=self.surge_end_s * factor,
            batch_at_s=self.batch_at_s * factor,
            batch_deadline_s=self.batch_deadline_s * factor,
            end_s=self.end_s * factor,
            batch_requests=round(self.batch_requests * factor),
        )

    @property
    def ttft_slo_s(self) -> float:
        return TTFT_SLO_S / self.time_scale

    @property
    def itl_slo_s(self) -> float:
        return ITL_SLO_S / self.time_scale

    def phase(self, t_s: float) -> str:
        if t_s < self.surge_start_s:
            return "baseline"
        if t_s < self.surge_end_s:
            return "interactive surge"
        if t_s < self.batch_at_s:
            return "surge over"
        if t_s < self.batch_at_s + self.batch_deadline_s:
            return "batch backlog"
        return "drain"


def _window(
    start_s: float, end_s: float, rate_scale: float, plan: DemoPlan, rng: np.random.Generator
) -> list[RequestSpec]:
    # Each phase replays its own stretch of the trace, starting where its clock starts.
    found = azure_trace(
        "conv",
        rate_scale=rate_scale,
        time_compress=plan.time_compress,
        start_s=start_s,
        duration_s=end_s - start_s,
        rng=rng,
    )
    return [
        replace(
            r,
            arrival_s=r.arrival_s + start_s,
            prompt_tokens=min(r.prompt_tokens, MAX_PROMPT),
            output_tokens=min(r.output_tokens, MAX_INTERACTIVE_OUTPUT),
        )
        for r in found
    ]


def interactive_requests(plan: DemoPlan) -> list[RequestSpec]:
    """The interactive arrivals of the whole timeline, in arrival order."""
    rng = np.random.default_rng(plan.seed)
    phases = (
        (0.0, plan.surge_start_s, plan.baseline_rate_scale),
        (plan.surge_start_s, plan.surge_end_s, plan.surge_rate_scale),
        (plan.surge_end_s, plan.end_s, plan.baseline_rate_scale),
    )
    found = [r for start, end, scale in phases for r in _window(start, end, scale, plan, rng)]
    return [replace(r, request_id=i) for i, r in enumerate(sorted(found, key=_arrival))]


def _arrival(request: RequestSpec) -> float:
    return request.arrival_s


def batch_requests(plan: DemoPlan) -> list[RequestSpec]:
    """The backlog submitted at `batch_at_s`, due `batch_deadline_s` later (timeline seconds)."""
    rng = np.random.default_rng(plan.seed + 1)
    backlog = batch_backlog(
        plan.batch_requests,
        source="arxiv",
        submit_s=plan.batch_at_s,
        deadline_s=plan.batch_deadline_s,
        rng=rng,
        first_id=1_000_000,
    )
    return [
        replace(
            r,
            prompt_tokens=min(r.prompt_tokens, MAX_PROMPT),
            output_tokens=min(r.output_tokens, MAX_BATCH_OUTPUT),
        )
        for r in backlog
    ]


def _role(min_r: int, max_r: int, min_seqs: int, max_seqs: int, seqs: int) -> dict[str, int]:
    return {
        "minReplicas": min_r,
        "maxReplicas": max_r,
        "minBatchSizeSeqs": min_seqs,
        "maxBatchSizeSeqs": max_seqs,
        "initialBatchSizeSeqs": seqs,
    }


def pool_spec(plan: DemoPlan, prometheus_url: str) -> dict[str, Any]:
    """The demo pool: deploy/examples/mixed-interactive-batch.yaml, small and fast."""
    return {
        "model": MODEL,
        "mode": "Enforce",
        "template": {
            "image": "vllm/vllm-openai:v0.11.0",
            "args": ["--max-model-len", str(MAX_MODEL_LEN), "--enable-chunked-prefill"],
        },
        "slo": {
            "interactiveTtftS": plan.ttft_slo_s,
            "interactiveItlS": plan.itl_slo_s,
            "percentileRatio": 0.95,
            "batchDeadlineS": plan.batch_deadline_s,
        },
        # The smallest batch sizes are half the largest: the local controller still moves the
        # target (through the gateway, no restart), but a burst of admissions to a fresh pod
        # (a short spike of its mean ITL while it prefills them) cannot halve its role's
        # capacity three times in the middle of the surge it was added for.
        "roles": {
            "interactive": _role(1, 2, 8, 16, 16),
            "mixed": _role(1, 4, 16, 32, 32),
            "batch": _role(0, 3, 32, 64, 64),
        },
        # Ten scrapes, as the operator's integration tests use: short next to the 45 s surge,
        # long enough for steady quantiles. (The window no longer needs to be kept below the
        # urgent dwell: mean ITL now averages the running sequences over the same window as the
        # token rate, so a load step no longer reads as a latency spike.)
        "prometheus": {"url": prometheus_url, "windowS": 10, "scrapeIntervalS": 1},
        # No batchQueue: the operator reads the batch queue and the batch output lengths from
        # the pool's gateway pods, as every pool with a gateway does by default.
        "gateway": {"maxQueuedRequests": 512, "maxQueueWaitS": 30},
        "control": {"intervalS": 2, "localIntervalS": 2, "historyLimit": 100},
        # Deleted pods drain: the gateway learns of a deletion from its watch at once, so a 2 s
        # preStop sleep covers it; the emulators then finish what they have (--shutdown-timeout,
        # by default as long as a 1024-token answer at the SLOs) before they exit.
        "drain": {"endpointDelayS": 2, "shutdownTimeoutFlag": True},
        "tuning": {
            "restart": {"dwellS": 10, "urgentDwellS": 10, "minIntervalS": 20},
            "guards": {
                "scaleUpCooldownS": 6,
                "scaleDownStabilizationS": 15,
                "metricsStalenessS": 10,
                "maxScaleUpStepReplicas": 2,
            },
        },
    }


def emulator_args(plan: DemoPlan) -> tuple[str, ...]:
    """Flags every emulated pod gets besides its container's: the profile, pace, cold start."""
    return (
        "--latency-profile",
        "llama31-8b-a100",
        "--time-scale",
        f"{plan.time_scale:g}",
        # The emulator divides the delay by the time scale; the cold start stays wall-clock.
        "--startup-delay-s",
        f"{plan.cold_start_s * plan.time_scale:g}",
        "--uvicorn-log-level",
        "warning",
    )
