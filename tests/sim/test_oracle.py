"""The oracle lower bound: hand-checked arithmetic, and no policy beats it while meeting SLOs."""

from __future__ import annotations

import math

import pytest

from chiron_operator.core.enums import RequestClass
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.sim.harness.oracle import oracle
from chiron_operator.sim.requests import RequestSpec
from tests.sim import benchkit
from tests.sim.simkit import SIMPLE, spec

BATCH = RequestClass.BATCH
# SIMPLE: decode 10 ms + 1 ms/seq, prefill 20 ms + 0.1 ms/token. With a 100 ms ITL SLO the
# iterations of interactive work may be at most 100 ms, so 10% of decode time is intercepts:
# each interactive token costs 1 ms / (1 - 10/100).
ITL_S = 0.1
TOKEN_S = 0.001 / 0.9


def bound(requests: list[RequestSpec], latency: LatencyModel = SIMPLE, **kwargs: float) -> float:
    settings = {"itl_slo_s": ITL_S, "horizon_s": 60.0, "bin_s": 60.0, **kwargs}
    result = oracle(requests, latency, **settings)  # type: ignore[arg-type]
    return result.gpu_hours * 3600.0


def test_one_interactive_request_costs_its_prefill_and_its_decode_tokens() -> None:
    # 100-token prompt: prefill 20 + 10 ms; 11 output tokens: 10 decode tokens after the first.
    assert bound([spec(0, 1.0, 100, 11)]) == pytest.approx(0.030 + 10 * TOKEN_S)


def test_the_context_term_counts_each_tokens_kv() -> None:
    # c = 0.001 ms per KV token: tokens 2 and 3 hold 101 and 102 tokens: 0.203 ms, / 0.9.
    with_context = LatencyModel("ctx", 10.0, 1.0, 0.001, 20.0, 0.1, 0.0, 1_000_000)
    expected = 0.030 + (2 * 0.001 + 0.203e-3) / 0.9
    assert bound([spec(0, 1.0, 100, 3)], with_context) == pytest.approx(expected)


def test_the_floor_is_paid_and_absorbs_batch_work_within_its_window() -> None:
    # Two bins of a 1-instance floor; 100 batch requests of 100 + 11 tokens at up to 1024 per
    # step: 100 x (30 ms prefill + 10 x 1 ms) + 1000 / 1024 x 10 ms < the idle floor.
    batch = [spec(i, 0.0, 100, 11, BATCH, 120.0) for i in range(100)]
    assert bound(batch, horizon_s=120.0, floor_instances=1) == pytest.approx(120.0)
    work = 100 * 0.040 + 1000 / 1024 * 0.010
    assert bound(batch, horizon_s=120.0) == pytest.approx(work)


def test_batch_work_beyond_the_floor_costs_exactly_its_time() -> None:
    # 5000 such requests take ~200 s of work, due within the first 60 s bin: the 60 s of floor
    # absorb part, the rest is paid on top.
    batch = [spec(i, 0.0, 100, 11, BATCH, 60.0) for i in range(5000)]
    work = 5000 * 0.040 + 50_000 / 1024 * 0.010
    assert bound(batch, horizon_s=120.0, floor_instances=1) == pytest.approx(120.0 + work - 60.0)


def test_nothing_is_charged_after_the_horizon() -> None:
    late = [spec(0, 70.0, 100, 11), spec(1, 10.0, 100, 11, BATCH, 100.0)]
    assert bound(late) == 0.0


def test_tensor_parallel_instances_cost_every_gpu() -> None:
    request = [spec(0, 1.0, 100, 11)]
    assert bound(request, gpus_per_instance=4) == pytest.approx(4 * bound(request))


def test_an_itl_slo_below_the_step_intercept_is_infeasible() -> None:
    assert math.isinf(bound([spec(0, 1.0, 100, 11)], itl_slo_s=0.005))


def test_peak_instances_round_up_the_busiest_bin() -> None:
    # 3000 requests in one minute at ~41 ms each: ~2.06 instances in that bin.
    busy = [spec(i, i * 0.02, 100, 11) for i in range(3000)]
    result = oracle(busy, SIMPLE, itl_slo_s=ITL_S, horizon_s=120.0, floor_instances=1)
    assert result.peak_instances == 3
    assert result.interactive_instances[0] == pytest.approx(3000 * (0.030 + 10 * TOKEN_S) / 60)


@pytest.mark.slow
def test_no_policy_of_the_quick_suite_beats_the_oracle_while_meeting_its_slos() -> None:
    document = benchkit.quick_bench()
    checked = 0
    for scenario in document["scenarios"]:
        for name, metrics in scenario["policies"].items():
            attained = [
                v
                for v in (
                    metrics["interactive_slo_attainment"],
                    metrics["batch_deadline_attainment"],
                )
                if v is not None
            ]
            if min(attained) >= 0.99:
                checked += 1
                assert metrics["gpu_hours"] >= scenario["oracle_gpu_hours"], (
                    scenario["name"],
                    name,
                )
    assert checked >= 3  # the property is exercised, not vacuous
