"""Busy detection without a per-class split, and scale-outs netted against starting pods."""

from __future__ import annotations

import math

import pytest

from chiron_operator.control.global_scaling import busy_share, decide_global
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
        (0.3, 0.05, 0.0),  # full of batch work, interactive latency fine: not busy
        (3.0, 0.05, 1.0),  # TTFT over its 2 s target: one busy instance
        (0.3, 0.2, 1.0),  # ITL over its 100 ms target
        # Latency unknown: the (full) totals stand in, 64 / (0.8 x 64) at its cap.
        (math.nan, math.nan, 1.25),
    ],
)
def test_unsplit_mixed_pod_is_judged_by_latency(
    ttft_s: float, itl_s: float, expected: float
) -> None:
    assert busy_share(mixed_pod(64.0, ttft_s, itl_s), 0.8, SLO) == pytest.approx(expected)


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


def _overflow_snapshot(interactive_waiting: float) -> PoolSnapshot:
    """One interactive pod at its cap with `interactive_waiting` queued, three unsplit mixed
    pods at their cap whose own latency is fine (the router sends them nothing more)."""
    interactive = PodSignals(
        name="i0",
        role=Role.INTERACTIVE,
        ready=True,
        max_num_seqs=32,
        running_requests=32.0,
        waiting_requests=interactive_waiting,
        interactive_running_requests=32.0,
        interactive_waiting_requests=interactive_waiting,
        ttft_s=60.0 if interactive_waiting else 0.3,
        itl_s=0.05,
        sample_age_s=1.0,
    )
    mixed = tuple(
        PodSignals(
            name=f"m{i}",
            role=Role.MIXED,
            ready=True,
            max_num_seqs=32,
            running_requests=31.0,
            waiting_requests=0.0,
            ttft_s=0.4,
            itl_s=0.05,
            sample_age_s=1.0,
        )
        for i in range(3)
    )
    roles = {
        Role.INTERACTIVE: RoleSnapshot(Role.INTERACTIVE, 1, 1, 0, 32, (interactive,)),
        Role.MIXED: RoleSnapshot(Role.MIXED, 3, 3, 0, 32, mixed),
    }
    return PoolSnapshot(0.0, roles, BatchQueue((), sample_age_s=1.0), metrics_age_s=1.0)


def test_overflow_beyond_interactive_cap_makes_full_unsplit_mixed_pods_busy() -> None:
    # Requests queue on the interactive pod beyond its 32 slots: the router found no mixed pod
    # with interactive room, so the full mixed pods are busy even though their latency is fine.
    proposals, observations, _ = decide_global(
        _overflow_snapshot(500.0), PoolTuning(), GlobalState()
    )
    # The interactive pod at its cap weighs 1 / r; each mixed pod its totals, 31 / (r x 32),
    # with r the busy level, at most 1 / r.
    r = PoolTuning().global_scaling.busy_running_ratio
    assert observations["busy_instances"] == pytest.approx(1 / r + 3 * min(31 / (r * 32), 1 / r))
    assert proposals[Role.MIXED].reason is Reason.INTERACTIVE_BACKPRESSURE_HIGH
    assert proposals[Role.MIXED].value > 3


def test_without_overflow_unsplit_mixed_pods_are_still_judged_by_latency() -> None:
    # The interactive pod is full but nothing queues beyond its cap: the mixed pods' totals may
    # be batch work, and their latency is fine, so only the interactive pod is busy.
    _, observations, _ = decide_global(_overflow_snapshot(0.0), PoolTuning(), GlobalState())
    assert observations["busy_instances"] == pytest.approx(
        1 / PoolTuning().global_scaling.busy_running_ratio
    )


def test_unsplit_mixed_pod_is_judged_by_its_mean_itl_against_the_target_share() -> None:
    # 45 sequences at 500 tokens/s: a token every 90 ms per sequence. Within the 100 ms SLO,
    # but over the 80 ms the local controller targets with itl_target_ratio 0.8. The histogram's
    # p95 gap (a 300 ms prefill stall) is not what is judged.
    pod = PodSignals(
        name="m",
        role=Role.MIXED,
        ready=True,
        max_num_seqs=64,
        running_requests=45.0,
        waiting_requests=0.0,
        generation_tokens_per_s=500.0,
        ttft_s=0.3,
        itl_s=0.3,
        sample_age_s=1.0,
    )
    assert busy_share(pod, 0.8, SLO) == 0.0
    assert busy_share(pod, 0.8, SLO, itl_target_ratio=0.8) == 1.0
