"""An offline lower bound on the GPU-hours any policy needs to serve a workload within its SLOs.

The oracle knows the whole trace in advance, starts instances instantly (no cold start), packs
work perfectly across instances and may use fractional instances. It charges each request only
the GPU time the latency model says it must cost:

**Decode.** A decode iteration of B sequences holding C KV tokens lasts a + b*B + c*C. Summed
over a run, the b and c terms depend only on the workload, never on how it was batched: every
output token after the first is one sequence-step (b), and the j-th of a request with prompt p
holds p + j tokens (c). So decode time = n*a + b*Σ(o-1) + c*Σ((o-1)*p + o*(o-1)/2) for n
iterations, and only n is up to the policy.

- Interactive: a request meets its ITL SLO L when its mean gap between tokens is at most L. Over
  all interactive tokens the token-weighted mean iteration is then at most L, and since an
  iteration lasts at least a + β*B_k (β = b + c * the tokens' mean context), Cauchy-Schwarz gives
  mean B <= (L - a)/β: at least tokens*β/(L - a) iterations. The interactive decode time is
  therefore at least (b*tokens + c*context) / (1 - a/L). (Stalls from other requests' prefills
  would only lengthen gaps further; the bound ignores them and the TTFT SLO, both relaxations.)
- Batch: no latency SLO, so iterations are as large as the batch-size bound and the KV cache
  allow: B_max = min(largest maxBatchSizeSeqs of the pool, KV capacity / mean context), and
  n >= tokens / B_max.

**Prefill.** Each prompt is charged once; preemptions and re-queues, which recompute prompts, are
not. With chunked prefill (the simulator's default, vLLM V1's) the charge is the unfloored
a + b*p + c*p^2 (`latency.prefill_chunk_s(0, p)`): the simulator charges a prompt's chunks
exactly that in all, plus the roofline's floor only in steps that carry prompt tokens and no
decode (`sim.latency`), so no schedule pays less. Without chunking it is `latency.prefill_s(p)`,
max(floor, ...), which the simulator then charges every prompt. Prompt tokens sharing a step
with decodes are charged on top of the decode step, as the simulator does (the decode terms
below count only decode work), so chunks never make decode cheaper.

Interactive work is charged to the bin of its arrival (a request that meets its SLO is served
within seconds of it). Batch work may run anywhere between its submission and its deadline, so
it first fills the capacity every policy must keep anyway (the pool's minimum instances) in
earliest-deadline order, and costs its full time beyond that. Requests arriving after the
horizon, and batch requests due after it, are not charged (no policy must finish them within
the horizon). The bound is per instance-second: GPU-hours = instance-hours x tensor parallelism.

Why it is a lower bound: every policy pays at least the pool's minimum instances at all times,
and beyond that for every instance-second of work above; the oracle pays exactly that, with no
cold starts, no idle capacity, no restarts and no scheduling inefficiency. What it does not
cover: a policy missing some requests skips their work (a policy at 99% attainment could undercut
it by the cost of the 1% it drops), and the context term uses each request's exact token count
while real batches mix contexts (the Cauchy step uses the mean; tests/sim/test_oracle.py checks
that no policy of the quick suite beats the bound while attaining its SLOs).

`peak_instances` is the most instances any bin needs, with every batch backlog's work spread
evenly over its window, rounded up (0 when the SLO is infeasible): no pool smaller than that can
serve the peak, which is where the static provisioning search starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from chiron_operator.core.enums import RequestClass
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.sim.requests import RequestSpec

Floats = npt.NDArray[np.float64]
Backlogs = dict[tuple[float, float], list[RequestSpec]]
"""Batch requests grouped by (deadline, submission): each group is one backlog's window."""


@dataclass(frozen=True, slots=True)
class OracleResult:
    """The bound and the per-bin instance needs behind it.

    `interactive_instances[j]` and `batch_instances[j]` are fractional instances in bin j (batch
    spread evenly over each backlog's window, for plots and peak sizing); `gpu_hours` is the
    bound itself (with batch work packed into the floor's spare capacity first).
    """

    gpu_hours: float
    bin_s: float
    floor_instances: int
    peak_instances: int
    interactive_instances: tuple[float, ...]
    batch_instances: tuple[float, ...]
    interactive_instance_s: float
    batch_instance_s: float
    batch_max_seqs: float

    @property
    def bin_starts_s(self) -> tuple[float, ...]:
        return tuple(i * self.bin_s for i in range(len(self.interactive_instances)))


@dataclass(frozen=True, slots=True)
class _Work:
    decode_tokens: float
    context_tokens: float
    prefill_s: float


def _work(
    requests: Sequence[RequestSpec], latency: LatencyModel, chunked_prefill: bool = True
) -> _Work:
    if not requests:
        return _Work(0.0, 0.0, 0.0)
    prompts = np.array([r.prompt_tokens for r in requests], dtype=np.float64)
    outputs = np.array([r.output_tokens for r in requests], dtype=np.float64)
    gaps = np.maximum(outputs - 1.0, 0.0)
    context = gaps * prompts + outputs * gaps / 2.0
    charge = (lambda t: latency.prefill_chunk_s(0, t)) if chunked_prefill else latency.prefill_s
    prefill = math.fsum(charge(int(p)) for p in prompts.tolist())
    return _Work(float(gaps.sum()), float(context.sum()), prefill)


def interactive_instance_s(work: _Work, latency: LatencyModel, itl_slo_s: float) -> float:
    """Least instance-seconds that serve this interactive work within the ITL SLO."""
    a = latency.decode_a_ms / 1000.0
    if a >= itl_slo_s:
        return math.inf if work.decode_tokens else work.prefill_s
    b = latency.decode_b_ms_per_seq / 1000.0
    c = latency.decode_c_ms_per_token / 1000.0
    decode = (b * work.decode_tokens + c * work.context_tokens) / (1.0 - a / itl_slo_s)
    return decode + work.prefill_s


def batch_max_seqs(work: _Work, latency: LatencyModel, max_batch_size_seqs: int) -> float:
    """The largest batch batch work can run at: the batch-size bound or the KV cache."""
    if work.decode_tokens <= 0:
        return float(max_batch_size_seqs)
    mean_context = work.context_tokens / work.decode_tokens
    kv_limited = latency.kv_capacity_tokens / max(mean_context, 1.0)
    return max(1.0, min(float(max_batch_size_seqs), kv_limited))


def batch_instance_s(work: _Work, latency: LatencyModel, max_seqs: float) -> float:
    """Least instance-seconds that serve this batch work at maximal throughput."""
    a = latency.decode_a_ms / 1000.0
    b = latency.decode_b_ms_per_seq / 1000.0
    c = latency.decode_c_ms_per_token / 1000.0
    iterations = work.decode_tokens / max_seqs
    return a * iterations + b * work.decode_tokens + c * work.context_tokens + work.prefill_s


def oracle(
    workload: Sequence[RequestSpec],
    latency: LatencyModel,
    *,
    itl_slo_s: float,
    horizon_s: float,
    gpus_per_instance: int = 1,
    floor_instances: int = 0,
    max_batch_size_seqs: int = 1024,
    bin_s: float = 60.0,
    chunked_prefill: bool = True,
) -> OracleResult:
    """The lower bound for `workload` over [0, horizon_s) (see the module docstring);
    `chunked_prefill` as the simulated pods run (`SimConfig.chunked_prefill`)."""
    bins = max(1, math.ceil(horizon_s / bin_s))
    widths = np.minimum(bin_s, horizon_s - np.arange(bins) * bin_s)
    by_bin, backlogs = _charged(workload, horizon_s, bin_s)
    interactive_s = np.zeros(bins)  # instance-seconds per bin
    for index, requests in by_bin.items():
        work = _work(requests, latency, chunked_prefill)
        interactive_s[index] = interactive_instance_s(work, latency, itl_slo_s)
    floor_s = float(floor_instances) * widths
    spare = np.maximum(floor_s - interactive_s, 0.0)  # instance-seconds free under the floor
    all_batch = [r for group in backlogs.values() for r in group]
    max_seqs = batch_max_seqs(_work(all_batch, latency), latency, max_batch_size_seqs)
    batch_s, extra = _place_batch(
        backlogs, widths, spare, latency, max_seqs, bin_s=bin_s, chunked_prefill=chunked_prefill
    )
    instance_s = float(np.maximum(interactive_s, floor_s).sum()) + extra
    return OracleResult(
        gpu_hours=instance_s * gpus_per_instance / 3600.0,
        bin_s=bin_s,
        floor_instances=floor_instances,
        peak_instances=_peak((interactive_s + batch_s) / widths, floor_instances),
        interactive_instances=tuple((interactive_s / widths).tolist()),
        batch_instances=tuple((batch_s / widths).tolist()),
        interactive_instance_s=float(interactive_s.sum()),
        batch_instance_s=float(batch_s.sum()),
        batch_max_seqs=max_seqs,
    )


def _charged(
    workload: Sequence[RequestSpec], horizon_s: float, bin_s: float
) -> tuple[dict[int, list[RequestSpec]], Backlogs]:
    """The requests the bound charges: interactive ones by arrival bin, batch ones by backlog."""
    by_bin: dict[int, list[RequestSpec]] = {}
    backlogs: Backlogs = {}
    for request in workload:
        if request.arrival_s >= horizon_s:
            continue
        if request.request_class is RequestClass.INTERACTIVE:
            by_bin.setdefault(int(request.arrival_s // bin_s), []).append(request)
        elif request.deadline_s is not None and request.deadline_s <= horizon_s:
            backlogs.setdefault((request.deadline_s, request.arrival_s), []).append(request)
    return by_bin, backlogs


def _place_batch(
    backlogs: Backlogs,
    widths: Floats,
    spare: Floats,
    latency: LatencyModel,
    max_seqs: float,
    *,
    bin_s: float,
    chunked_prefill: bool,
) -> tuple[Floats, float]:
    """Each backlog's instance-seconds spread evenly over its window (for plots and the peak),
    and what is left once the floor's spare capacity (`spare`, used up in place) has taken its
    share, earliest deadline first."""
    bins = len(widths)
    batch_s = np.zeros(bins)
    extra = 0.0
    for (deadline, submit), requests in sorted(backlogs.items()):
        work = _work(requests, latency, chunked_prefill)
        seconds = batch_instance_s(work, latency, max_seqs)
        first = int(submit // bin_s)
        window = range(first, max(first + 1, min(math.ceil(deadline / bin_s), bins)))
        span = float(widths[window.start : window.stop].sum())
        batch_s[window.start : window.stop] += seconds * widths[window.start : window.stop] / span
        extra += _fill_spare(spare, window, seconds)
    return batch_s, extra


def _fill_spare(spare: Floats, window: range, seconds: float) -> float:
    """Take `seconds` from `spare` over `window`, earliest bin first; returns what is left."""
    left = seconds
    for index in window:
        used = min(left, float(spare[index]))
        spare[index] -= used
        left -= used
    return left


def _peak(need: Floats, floor_instances: int) -> int:
    """The most instances any bin needs, rounded up (0 when the SLO is infeasible)."""
    most = float(need.max())
    return max(floor_instances, math.ceil(most - 1e-9)) if math.isfinite(most) else 0
