"""Busy detection without a per-class split, and scale-outs netted against starting pods."""

from __future__ import annotations

import math

import pytest

from chiron_operator.control.global_scaling import decide_global, is_busy
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import (
    BatchGroup,
    BatchQueue,
    PodSignals,
    PoolSnapshot,
    RoleSnapshot,
)
from chiron_operator.core.state import GlobalState
from chiron_operator.core.tuning import PoolTuning

SLO = PoolTuning().slo


def mixed_pod(running: float, ttft_s: float, itl_s: float) -> PodSignals:
    """A mixed pod as real vLLM reports it: totals only, no per-class split."""
    return PodSignals(
        name="p",
        role=Role.MIXED,
        ready=True,
        max_num_seqs=64,
        running_requests=running,
        waiting_requests=3.0,
        ttft_s=ttft_s,
        itl_s=itl_s,
        sample_age_s=1.0,
    )


@pytest.mark.parametrize(
    ("ttft_s", "itl_s", "expected"),
    [
        (0.3, 0.05, False),  # full of batch work, interactive latency fine: not busy
        (3.0, 0.05, True),  # TTFT over its 2 s target
        (0.3, 0.2, True),  # ITL over its 100 ms target
        (math.nan, math.nan, True),  # latency unknown: fall back to the (full) totals
    ],
)
def test_unsplit_mixed_pod_is_judged_by_latency(
    ttft_s: float, itl_s: float, expected: bool
) -> None:
    assert is_busy(mixed_pod(64.0, ttft_s, itl_s), 0.8, SLO) is expected


def test_batch_scale_out_counts_pods_still_starting() -> None:
    tuning = PoolTuning()
    batch_pod = PodSignals(
        name="b0",
        role=Role.BATCH,
        ready=True,
        max_num_seqs=256,
        running_requests=256.0,
        waiting_requests=10.0,
        generation_tokens_per_s=2000.0,
        sample_age_s=1.0,
    )
    queue = BatchQueue((BatchGroup(3600.0, 100_000),), 300.0, 250.0, 1.0)

    def batch_verdict(replicas: int) -> tuple[int, Reason]:
        roles = {Role.BATCH: RoleSnapshot(Role.BATCH, replicas, 1, replicas - 1, 256, (batch_pod,))}
        snapshot = PoolSnapshot(0.0, roles, queue, metrics_age_s=1.0)
        proposals, _, _ = decide_global(snapshot, tuning, GlobalState(2000.0))
        return proposals[Role.BATCH].value, proposals[Role.BATCH].reason

    wanted, reason = batch_verdict(1)
    assert reason is Reason.BATCH_DEADLINES_AT_RISK and wanted > 2
    # Once the Deployment asks for them, the starting pods cover the need: no second addition.
    assert batch_verdict(wanted) == (wanted, Reason.PENDING_CAPACITY)
