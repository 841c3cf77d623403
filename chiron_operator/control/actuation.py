"""Controller memory after a decision that was not (all) carried out. Pure.

`decide` returns the state as if every decided change happened: a scale-up stamps the cooldown,
a restart spends the restart budget. In Observe and Recommend nothing happens, and in Enforce a
change can be blocked (a conflict) or fail to apply. Keeping those stamps would be remembering
actions that never took place: a role that wants to grow would alternate between its proposal
and a ScaleUpCooldown hold every tick, and switching to Enforce would find the restart budget
spent on restarts no pod ever went through.

`settle` keeps what the controllers *learnt* from the snapshot (EWMAs, throughput baselines,
the stabilisation window, pending targets, the batch-instance throughput) and reverts what they
*booked* for a change that was not applied (scale stamps, restart stamps). Case by case:

- `GuardState.recommendations` is learnt: the raw proposals describe the load, applied or not,
  and the scale-down window must see them so Enforce is stabilised from the first tick.
- `GuardState.last_scale_up_s` / `last_scale_down_s` are booked: they say when the role was
  last resized, which is what the cooldown protects; an unapplied resize did not resize it.
- `RestartState.restart_times_s` is booked: the budget and the least interval count restarts
  of pods, and an unapplied batch-size change restarted none.
- `RestartState.pending_*` is learnt: how long the target has stayed on its side of the applied
  value. `decide_restart` clears it when it decides a restart; an unapplied restart leaves the
  target still pending, with the dwell it had already served (so Enforce applies at once).
- `LocalState` is all learnt (EWMA of ITL, throughput before the last increase, the target),
  and every local step is taken from the batch size the pods run, not from the target.
- `GlobalState` is learnt (what one batch instance was seen to deliver).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from chiron_operator.core.decision import PoolDecision
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.state import ChironState, GuardState, RestartState


@dataclass(frozen=True, slots=True)
class Unapplied:
    """The roles whose decided replicas / batch size were not written to their Deployment."""

    replicas: frozenset[Role] = frozenset()
    batch_size: frozenset[Role] = frozenset()

    @classmethod
    def of(cls, replicas: Collection[Role] = (), batch_size: Collection[Role] = ()) -> Unapplied:
        return cls(frozenset(replicas), frozenset(batch_size))

    def __bool__(self) -> bool:
        return bool(self.replicas or self.batch_size)


def settle(
    before: ChironState, after: ChironState, decision: PoolDecision, unapplied: Unapplied
) -> ChironState:
    """`after` (from `decide` on `before`) without the bookkeeping of the unapplied changes."""
    if not unapplied:
        return after
    guards = dict(after.guards)
    for role in unapplied.replicas & guards.keys():
        guards[role] = _unbook_resize(before.guards.get(role, GuardState()), guards[role])
    restart = dict(after.restart)
    for role in unapplied.batch_size & restart.keys():
        restart[role] = _unbook_restart(before.restart, restart[role], role, decision)
    return replace(after, guards=guards, restart=restart)


def _unbook_resize(before: GuardState, after: GuardState) -> GuardState:
    """The window of recommendations is kept; the resize stamps go back to what they were."""
    return replace(
        after,
        last_scale_up_s=before.last_scale_up_s,
        last_scale_down_s=before.last_scale_down_s,
    )


def _unbook_restart(
    before_states: Mapping[Role, RestartState],
    after: RestartState,
    role: Role,
    decision: PoolDecision,
) -> RestartState:
    """Drop the restart stamped for `role` this tick and keep its target pending.

    The restart was decided, so the dwell was served: the pending start is the one before
    (never later than now), or now when there was none (a zero dwell). The next tick then
    passes the dwell and, without the stamp, the budget: the same restart is decided again.
    """
    found = decision.roles.get(role)
    if found is None or found.max_num_seqs.reason is not Reason.RESTART_APPLIED:
        return after
    now_s = decision.now_s
    log = after.restart_times_s
    if log and log[-1] == now_s:
        log = log[:-1]
    before = before_states.get(role, RestartState())
    since_s = before.pending_since_s
    if since_s is None or before.pending_target_seqs is None or since_s > now_s:
        since_s = now_s
    return RestartState(
        pending_target_seqs=found.max_num_seqs.value,
        pending_since_s=since_s,
        restart_times_s=log,
    )
