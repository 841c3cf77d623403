"""The restart-aware slow path: when a new --max-num-seqs is worth restarting a role's pods for.

Changing the engine argument rolls every pod of the role, so the local controller's target is
written to the Deployment only when the move is significant (hysteresis), sustained (dwell, on
the same side of the applied value), and within the restart budget (a least interval between
restarts and a cap per sliding hour). Everything else keeps the applied value.
"""

from __future__ import annotations

import math
from dataclasses import replace

from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason
from chiron_operator.core.state import RestartState
from chiron_operator.core.tuning import RestartTuning

HOUR_S = 3600.0


def decide_restart(  # noqa: PLR0917 -- the composed policy's contract is positional
    now_s: float,
    applied_seqs: int,
    target: Verdict,
    urgent: bool,
    tuning: RestartTuning,
    state: RestartState,
) -> tuple[Verdict, RestartState]:
    """The --max-num-seqs to write to the Deployment now, and the layer's new memory.

    `target` is the local controller's verdict; `urgent` (an ITL SLO breach) lets a decrease use
    the shorter urgent dwell. A refused move keeps `applied_seqs` with the gate that refused it;
    a target equal to the applied value passes through with its own reason.
    """
    log = _prune(state.restart_times_s, now_s, tuning)
    if target.value == applied_seqs:
        return target, RestartState(restart_times_s=log)
    change = _relative_change(target.value, applied_seqs)
    if change < tuning.min_change_ratio:
        message = (
            f"target {target.value} is {change:.0%} from applied {applied_seqs}, "
            f"below {tuning.min_change_ratio:.0%}: keep {applied_seqs}"
        )
        verdict = target.but(applied_seqs, Reason.RESTART_BELOW_HYSTERESIS, message)
        return verdict, RestartState(restart_times_s=log)
    pending = _track_pending(now_s, applied_seqs, target.value, state)
    dwell_s = _dwell_s(target.value, applied_seqs, urgent, tuning)
    refusal = _dwell_refusal(now_s, applied_seqs, target.value, dwell_s, pending)
    if refusal is None:
        refusal = _budget_refusal(now_s, applied_seqs, tuning, log)
    if refusal is not None:
        reason, message = refusal
        return target.but(applied_seqs, reason, message), replace(pending, restart_times_s=log)
    message = (
        f"restart to apply --max-num-seqs {applied_seqs} -> {target.value} "
        f"(restart {_in_last_hour(log, now_s) + 1} of {tuning.max_restarts_per_hour} this hour)"
    )
    verdict = target.but(target.value, Reason.RESTART_APPLIED, message)
    return verdict, RestartState(restart_times_s=(*log, now_s))


def _relative_change(target_seqs: int, applied_seqs: int) -> float:
    # No known applied size: any target is a significant change.
    if applied_seqs <= 0:
        return math.inf
    return abs(target_seqs - applied_seqs) / applied_seqs


def _prune(times_s: tuple[float, ...], now_s: float, tuning: RestartTuning) -> tuple[float, ...]:
    """Drop restarts no gate can see any more; the newest is kept for the least interval."""
    horizon_s = max(HOUR_S, tuning.min_interval_s)
    return tuple(t for t in times_s if now_s - t < horizon_s)


def _in_last_hour(times_s: tuple[float, ...], now_s: float) -> int:
    return sum(1 for t in times_s if now_s - t < HOUR_S)


def _side(target_seqs: int, applied_seqs: int) -> int:
    return (target_seqs > applied_seqs) - (target_seqs < applied_seqs)


def _track_pending(
    now_s: float, applied_seqs: int, target_seqs: int, state: RestartState
) -> RestartState:
    """Keep the dwell running while the target stays on one side of the applied value."""
    since = state.pending_since_s
    previous = state.pending_target_seqs
    same_side = previous is not None and _side(previous, applied_seqs) == _side(
        target_seqs, applied_seqs
    )
    # A start in the future (the clock went back) would stall the dwell; start afresh instead.
    if not same_side or since is None or since > now_s:
        since = now_s
    return replace(state, pending_target_seqs=target_seqs, pending_since_s=since)


def _dwell_s(target_seqs: int, applied_seqs: int, urgent: bool, tuning: RestartTuning) -> float:
    # Only a decrease relieves a breached SLO; an urgent increase makes no sense.
    return tuning.urgent_dwell_s if urgent and target_seqs < applied_seqs else tuning.dwell_s


def _dwell_refusal(
    now_s: float,
    applied_seqs: int,
    target_seqs: int,
    dwell_s: float,
    pending: RestartState,
) -> tuple[Reason, str] | None:
    """Refuse until the target has stayed on its side of the applied value for the dwell."""
    since_s = pending.pending_since_s if pending.pending_since_s is not None else now_s
    held_s = now_s - since_s
    if held_s >= dwell_s:
        return None
    side = "below" if target_seqs < applied_seqs else "above"
    return Reason.RESTART_DWELLING, (
        f"target {target_seqs} {side} applied {applied_seqs} for {held_s:.0f} s of "
        f"{dwell_s:.0f} s: {dwell_s - held_s:.0f} s to go"
    )


def _budget_refusal(
    now_s: float, applied_seqs: int, tuning: RestartTuning, log: tuple[float, ...]
) -> tuple[Reason, str] | None:
    """Refuse while the last restart is too recent or the sliding hour's budget is spent."""
    if log and now_s - max(log) < tuning.min_interval_s:
        since_last_s = now_s - max(log)
        return Reason.RESTART_MIN_INTERVAL, (
            f"last restart {since_last_s:.0f} s ago, least interval {tuning.min_interval_s:.0f} s:"
            f" {tuning.min_interval_s - since_last_s:.0f} s to go (keep {applied_seqs})"
        )
    recent = [t for t in log if now_s - t < HOUR_S]
    if len(recent) < tuning.max_restarts_per_hour:
        return None
    wait = f"next in {min(recent) + HOUR_S - now_s:.0f} s" if recent else "no restarts allowed"
    return Reason.RESTART_BUDGET_EXHAUSTED, (
        f"{len(recent)} restarts in the last hour, budget {tuning.max_restarts_per_hour}: "
        f"{wait} (keep {applied_seqs})"
    )
