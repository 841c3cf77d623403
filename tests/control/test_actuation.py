"""`actuation.settle`: controller memory keeps what was learnt, not what was never done."""

from __future__ import annotations

from chiron_operator.control import chiron
from chiron_operator.control.actuation import Unapplied, settle
from chiron_operator.control.restart import decide_restart
from chiron_operator.core.decision import PoolDecision, RoleDecision, Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.state import ChironState, GuardState, RestartState
from chiron_operator.core.tuning import PoolTuning
from tests.control.fluid import FluidPool

TICK_S = 15.0
TUNING = PoolTuning()


def _pool() -> FluidPool:
    return FluidPool(
        interactive_load_seqs=200.0,
        replicas={Role.INTERACTIVE: 1, Role.MIXED: 0, Role.BATCH: 0},
        max_num_seqs={Role.INTERACTIVE: 32, Role.MIXED: 64, Role.BATCH: 256},
    )


def _unapplied(pool: FluidPool, decision: PoolDecision) -> Unapplied:
    """Every role whose decision differs from what the pool runs: nothing was applied."""
    return Unapplied.of(
        replicas=[r for r, d in decision.roles.items() if d.replicas.value != pool.replicas[r]],
        batch_size=[
            r for r, d in decision.roles.items() if d.max_num_seqs.value != pool.max_num_seqs[r]
        ],
    )


def _observe(pool: FluidPool, ticks: int) -> tuple[list[PoolDecision], ChironState]:
    state = chiron.initial_state()
    decisions = []
    for tick in range(ticks):
        decision, after = chiron.decide(pool.snapshot(tick * TICK_S), TUNING, state)
        state = settle(state, after, decision, _unapplied(pool, decision))
        decisions.append(decision)
    return decisions, state


def test_a_role_that_wants_to_grow_asks_the_same_every_tick() -> None:
    pool = _pool()
    ticks = int(3 * TUNING.guards.scale_up_cooldown_s / TICK_S) + 2
    decisions, state = _observe(pool, ticks)
    asked = {
        (d.roles[Role.MIXED].replicas.value, d.roles[Role.MIXED].replicas.reason) for d in decisions
    }
    assert len(asked) == 1 and Reason.SCALE_UP_COOLDOWN not in {r for _, r in asked}
    assert state.guards[Role.MIXED].last_scale_up_s is None
    # Enforce from here: the proposal is applied at once, and only then does it book a cooldown.
    decision, after = chiron.decide(pool.snapshot(ticks * TICK_S), TUNING, state)
    assert decision.replicas(Role.MIXED) == decisions[0].replicas(Role.MIXED)
    assert settle(state, after, decision, Unapplied()) == after
    assert after.guards[Role.MIXED].last_scale_up_s == ticks * TICK_S


def test_learning_is_kept_and_bookkeeping_reverted() -> None:
    before = ChironState(
        guards={Role.MIXED: GuardState(last_scale_up_s=1.0, last_scale_down_s=2.0)},
        restart={Role.MIXED: RestartState(pending_target_seqs=96, pending_since_s=50.0)},
    )
    decision, after = chiron.decide(_pool().snapshot(100.0), TUNING, before)
    settled = settle(before, after, decision, Unapplied.of(replicas=[Role.MIXED]))
    assert settled.local == after.local and settled.global_scaling == after.global_scaling
    assert settled.guards[Role.MIXED].recommendations == after.guards[Role.MIXED].recommendations
    assert settled.guards[Role.MIXED].last_scale_up_s == 1.0
    assert settled.guards[Role.MIXED].last_scale_down_s == 2.0
    assert settled.guards[Role.INTERACTIVE] == after.guards[Role.INTERACTIVE]


def _restart(now_s: float, state: RestartState) -> tuple[PoolDecision, RestartState]:
    """The restart layer asked to move 64 -> 128 (the local controller's target) at `now_s`."""
    target = Verdict(128, Reason.BATCH_SIZE_INCREASE, "grow")
    verdict, after = decide_restart(now_s, 64, target, False, TUNING.restart, state)
    replicas = Verdict(1, Reason.NO_CHANGE, "")
    decided = RoleDecision(Role.MIXED, replicas, verdict, 128)
    return PoolDecision(now_s, {Role.MIXED: decided}), after


def test_an_unapplied_restart_returns_its_budget_and_keeps_its_dwell() -> None:
    dwell_s = TUNING.restart.dwell_s
    state = RestartState(restart_times_s=(10.0,))
    decision, after = _restart(1000.0, state)
    assert decision.roles[Role.MIXED].max_num_seqs.reason is Reason.RESTART_DWELLING
    state = after
    now_s = 1000.0 + dwell_s
    decision, after = _restart(now_s, state)
    assert decision.roles[Role.MIXED].max_num_seqs.reason is Reason.RESTART_APPLIED
    assert after.restart_times_s[-1] == now_s
    wrap = ChironState(restart={Role.MIXED: state})
    settled = settle(wrap, ChironState(restart={Role.MIXED: after}), decision, _BATCH)
    kept = settled.restart[Role.MIXED]
    assert now_s not in kept.restart_times_s
    assert (kept.pending_target_seqs, kept.pending_since_s) == (128, 1000.0)
    # The next tick passes the dwell and the budget again: Enforce restarts at once.
    again, _ = _restart(now_s + 1.0, kept)
    assert again.roles[Role.MIXED].max_num_seqs.reason is Reason.RESTART_APPLIED
    # Without settling, the unapplied restart would hold the next one for the least interval.
    held, _ = _restart(now_s + 1.0, after)
    assert held.roles[Role.MIXED].max_num_seqs.reason is not Reason.RESTART_APPLIED


_BATCH = Unapplied.of(batch_size=[Role.MIXED])
