"""Chiron's global autoscaler: instance counts per role from interactive and batch backpressure.

Raw proposals only: bounds, steps, cooldowns, pending pods and stale-metric holds are the guard
rails' job afterwards. The rules stay conservative on their own, though: what cannot be seen is
never read as idle, and no rule scales a role down on a missing signal.

Interactive (IBP = busy / sampled interactive+mixed instances): above the band, add mixed
instances; below it, remove an interactive instance, or a mixed one once interactive sits at its
min. Batch (BBP from the CLT waiting-time bound): add batch instances only while deadlines are at
risk and mixed instances have no idle capacity to absorb the work; remove one while every
deadline would still hold without it, with a margin.
"""

from __future__ import annotations

import math

from chiron_operator.control.batch_scaling import (
    batch_context,
    decide_batch,
    update_instance_estimate,
)
from chiron_operator.control.interactive_scaling import (
    busy_share,
    decide_interactive,
    interactive_backpressure_counts,
)
from chiron_operator.control.pool_view import allowed
from chiron_operator.control.startup import observe_startups
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import PoolSnapshot
from chiron_operator.core.state import GlobalState
from chiron_operator.core.tuning import PoolTuning

__all__ = ["busy_share", "decide_global", "interactive_backpressure_counts"]


def decide_global(
    snapshot: PoolSnapshot, tuning: PoolTuning, state: GlobalState
) -> tuple[dict[Role, Verdict], dict[str, float], GlobalState]:
    """Desired replicas per role (before guard rails), observations named with units, new state.

    Every role the bounds allow (max_replicas > 0) gets a verdict; proposals are never negative.
    """
    staleness_s = tuning.guards.metrics_staleness_s
    busy, sampled = interactive_backpressure_counts(
        snapshot,
        tuning.global_scaling.busy_running_ratio,
        staleness_s,
        tuning.slo,
        tuning.local.itl_target_ratio,
    )
    new_state = observe_startups(snapshot, update_instance_estimate(snapshot, tuning, state))
    context = batch_context(snapshot, tuning, new_state)
    proposals = decide_interactive(snapshot, tuning, busy, sampled)
    if allowed(tuning, Role.BATCH):
        proposals[Role.BATCH] = decide_batch(snapshot, tuning, context)
    ibp = busy / sampled if sampled else math.nan
    observations = {
        "interactive_backpressure_ratio": ibp,
        "busy_instances": float(busy),
        "sampled_instances": float(sampled),
        "batch_backpressure_ratio": context.assessment.backpressure_ratio,
        "batch_required_tokens_per_s": context.assessment.required_throughput_tokens_per_s,
        "batch_throughput_tokens_per_s": context.throughput_tokens_per_s,
        "batch_instance_tokens_per_s": context.instance_tokens_per_s,
        "batch_worst_slack_s": context.assessment.worst_slack_s,
        "batch_queued_requests": float(snapshot.batch_queue.queued_requests),
        "mixed_utilization_ratio": context.mixed_utilization_ratio,
        "startup_s": context.startup_s,
    }
    return proposals, observations, new_state
