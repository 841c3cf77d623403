"""The fast path of the local controller: a gateway caps pods at the target, no restart.

With the pool's gateway on, every pod admits at most min(--max-num-seqs, its role's target)
requests, and the target changes within a second of the operator publishing it. The
Deployment's --max-num-seqs is then only a ceiling: a target below it costs nothing, and the
restart-aware layer (`restart.decide_restart`, with its hysteresis, dwell and budget) is asked
only to raise the ceiling when the target must go above it. It raises it geometrically (at
least doubling, capped by the role's bound), so a growing target restarts pods a handful of
times in a pool's life rather than at every step, and it never lowers it.
"""

from __future__ import annotations

from chiron_operator.control.restart import decide_restart
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason
from chiron_operator.core.state import LocalState, RestartState
from chiron_operator.core.tuning import RestartTuning, RoleBounds


def running_cap(applied_seqs: int, state: LocalState) -> int:
    """What the pods run now: the gateway's cap, i.e. the last target under the ceiling."""
    target = state.target_max_num_seqs
    return applied_seqs if target is None else max(1, min(applied_seqs, target))


def decide_ceiling(  # noqa: PLR0917 -- mirrors decide_restart's positional contract
    now_s: float,
    applied_seqs: int,
    target: Verdict,
    bounds: RoleBounds,
    tuning: RestartTuning,
    state: RestartState,
) -> tuple[Verdict, RestartState]:
    """The --max-num-seqs to write: the ceiling, raised only when the target is above it."""
    if target.value <= applied_seqs:
        message = (
            f"the gateway caps pods at the target {target.value}: --max-num-seqs "
            f"{applied_seqs} stays the ceiling, no restart"
        )
        kept = target.but(applied_seqs, Reason.BATCH_SIZE_VIA_GATEWAY, message)
        return kept, RestartState(restart_times_s=state.restart_times_s)
    ceiling = min(bounds.max_batch_size_seqs, max(target.value, 2 * applied_seqs))
    message = f"target {target.value} is above the ceiling {applied_seqs}: raise it to {ceiling}"
    raised = target.but(ceiling, target.reason, message)
    return decide_restart(now_s, applied_seqs, raised, False, tuning, state)
