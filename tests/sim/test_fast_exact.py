"""FAST mode (decode fast-forwarded between events) agrees with EXACT (every iteration)."""

from __future__ import annotations

import numpy as np
import pytest

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.sim.config import SimConfig, StepMode
from chiron_operator.sim.engine import SimResult, simulate
from chiron_operator.sim.records import RequestRecord
from chiron_operator.sim.requests import RequestSpec
from chiron_operator.sim.router import RoutingMode
from tests.sim.simkit import H100_LIKE, fixed_policy, spec
from tests.sim.test_conservation import CHURN, random_workload, run_phases

INT, MIX, BAT = Role.INTERACTIVE, Role.MIXED, Role.BATCH
# A cache small enough that busy pods preempt.
TIGHT_KV = LatencyModel("tight-kv", 6.0, 0.011, 4.3e-05, 5.5, 0.013, 9.2e-07, 20_000)


def _conversations(n: int, rate_per_s: float, seed: int) -> list[RequestSpec]:
    """Poisson arrivals, lognormal lengths shaped like the Azure conv trace; a third batch."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    prompts = np.clip(rng.lognormal(6.5, 0.9, n), 8, 8000).astype(int)
    outputs = np.clip(rng.lognormal(5.0, 0.8, n), 1, 1500).astype(int)
    return [
        spec(
            i,
            float(t),
            int(p),
            int(o),
            RequestClass.BATCH if i % 3 == 2 else RequestClass.INTERACTIVE,
            float(t) + 600.0 if i % 3 == 2 else None,
        )
        for i, (t, p, o) in enumerate(zip(times, prompts, outputs, strict=True))
    ]


def _run(
    mode: StepMode, latency: LatencyModel, workload: list[RequestSpec], budget: int | None = 2048
) -> SimResult:
    sizes = {INT: (1, 24), MIX: (1, 48), BAT: (1, 96)}
    config = SimConfig(
        latency,
        30.0,
        workload[-1].arrival_s + 60.0,
        initial_replicas={r: n for r, (n, _) in sizes.items()},
        initial_max_num_seqs={r: s for r, (_, s) in sizes.items()},
        step_mode=mode,
        chunked_prefill=budget is not None,
        max_num_batched_tokens=budget or 1,
    )
    return simulate(config, workload, fixed_policy(sizes))


def _metrics(records: tuple[RequestRecord, ...]) -> dict[str, np.ndarray]:
    done = [r for r in records if r.completed]
    return {
        "ttft": np.array([r.ttft_s for r in done]),
        "itl": np.array([r.mean_itl_s for r in done if r.output_tokens > 1]),
        "completion": np.array([r.completion_s - r.arrival_s for r in done]),
    }


@pytest.mark.parametrize(
    ("latency", "rate", "budget"),
    [
        (H100_LIKE, 25.0, 2048),
        (TIGHT_KV, 20.0, 2048),
        # Most prompts span several chunks (median ~660 tokens, up to 8000).
        (H100_LIKE, 25.0, 256),
        (H100_LIKE, 25.0, None),
    ],
    ids=["h100", "tight-kv", "h100-long-prompts-in-chunks", "h100-unchunked"],
)
def test_fast_and_exact_agree_within_two_percent(
    latency: LatencyModel, rate: float, budget: int | None
) -> None:
    workload = _conversations(2500, rate, seed=5)
    fast = _run(StepMode.FAST, latency, workload, budget)
    exact = _run(StepMode.EXACT, latency, workload, budget)
    assert fast.summary.completed == exact.summary.completed > 2000
    assert fast.events * 3 < exact.events  # fast-forwarding skips most iterations
    fast_m, exact_m = _metrics(fast.requests), _metrics(exact.requests)
    for name, values in fast_m.items():
        for q in (50, 95):
            a, b = np.percentile(values, q), np.percentile(exact_m[name], q)
            assert a == pytest.approx(b, rel=0.02), f"p{q} {name}: fast {a} exact {b}"
    # Both modes run the same arithmetic, so individual requests agree far more closely.
    gaps = [
        abs(f.completion_s - e.completion_s)
        for f, e in zip(fast.requests, exact.requests, strict=True)
        if f.completed
    ]
    assert np.percentile(gaps, 99) < 1e-6
    if latency is TIGHT_KV:
        assert fast.summary.preemptions == exact.summary.preemptions > 0


@pytest.mark.parametrize("routing", list(RoutingMode))
def test_churning_pool_gives_the_same_records_in_both_modes(routing: RoutingMode) -> None:
    # Scaling, drains with aborts, restarts and KV preemptions: still the same arithmetic.
    workload = random_workload(3, 400)
    fast = run_phases(workload, CHURN, mode=StepMode.FAST, routing=routing)
    exact = run_phases(workload, CHURN, mode=StepMode.EXACT, routing=routing)
    assert fast.summary.requeues == exact.summary.requeues > 0
    assert fast.summary.preemptions == exact.summary.preemptions > 0
    # The gateway's cut-offs end a segment mid-way in FAST mode: the same boundaries still.
    assert fast.summary.cut_offs == exact.summary.cut_offs
    assert (fast.summary.cut_offs > 0) == (routing is RoutingMode.CHIRON)
    for f, e in zip(fast.requests, exact.requests, strict=True):
        assert (f.dropped_reason, f.preemptions, f.requeues) == (
            e.dropped_reason,
            e.preemptions,
            e.requeues,
        )
        assert f.first_token_s == pytest.approx(e.first_token_s, abs=1e-6, nan_ok=True)
        assert f.completion_s == pytest.approx(e.completion_s, abs=1e-6, nan_ok=True)
