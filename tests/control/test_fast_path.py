"""The local controller's fast path: with a gateway capping pods at the target, a smaller
batch size never restarts pods, and --max-num-seqs is a ceiling raised rarely and never lowered."""

from __future__ import annotations

import dataclasses
import itertools

from chiron_operator.control import chiron
from chiron_operator.control.fast_path import decide_ceiling, running_cap
from chiron_operator.core.decision import PoolDecision, Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.state import ChironState, LocalState, RestartState
from chiron_operator.core.tuning import PoolTuning, RestartTuning, RoleBounds
from tests.control.fluid import FluidPool

TICK_S = 15.0
FAST = PoolTuning(fast_path=True)
SLOW = PoolTuning()


def run(pool: FluidPool, ticks: int, tuning: PoolTuning) -> tuple[list[PoolDecision], ChironState]:
    """The closed loop; with the fast path the gateway applies each target at once."""
    state = chiron.initial_state()
    decisions = []
    for tick in range(ticks):
        decision, state = chiron.decide(pool.snapshot(tick * TICK_S), tuning, state)
        decisions.append(decision)
        for role, role_decision in decision.roles.items():
            pool.replicas[role] = role_decision.replicas.value
            pool.max_num_seqs[role] = role_decision.max_num_seqs.value
            if tuning.fast_path:
                pool.gateway_caps[role] = role_decision.target_max_num_seqs
    return decisions, state


def slow_itl_pool() -> FluidPool:
    """Enough load that 64 sequences per pod break the ITL SLO (0.1 s): the target must fall."""
    return FluidPool(
        interactive_load_seqs=120.0,
        itl_per_seq_s=0.003,
        replicas={Role.INTERACTIVE: 2, Role.MIXED: 0, Role.BATCH: 0},
        max_num_seqs={Role.INTERACTIVE: 64, Role.MIXED: 64, Role.BATCH: 256},
    )


def pinned(tuning: PoolTuning) -> PoolTuning:
    """`tuning` with the two interactive pods fixed and no mixed role: the load stays on them,
    so a smaller cap binds (a cap above what the busiest pod runs would hold instead)."""
    interactive = RoleBounds(min_replicas=2, max_replicas=2)
    mixed = RoleBounds(min_replicas=0, max_replicas=0)
    bounds = {**tuning.bounds, Role.INTERACTIVE: interactive, Role.MIXED: mixed}
    return dataclasses.replace(tuning, bounds=bounds)


def test_a_smaller_target_never_restarts_pods_with_the_gateway() -> None:
    decisions, state = run(slow_itl_pool(), 40, pinned(FAST))
    interactive = [d.roles[Role.INTERACTIVE] for d in decisions]
    assert {r.max_num_seqs.value for r in interactive} == {64}
    assert min(r.target_max_num_seqs for r in interactive) < 64
    assert any(r.max_num_seqs.reason is Reason.BATCH_SIZE_VIA_GATEWAY for r in interactive)
    assert all(not s.restart_times_s for s in state.restart.values())


def test_without_the_gateway_the_same_load_restarts_pods() -> None:
    decisions, state = run(slow_itl_pool(), 40, pinned(SLOW))
    applied = [d.roles[Role.INTERACTIVE].max_num_seqs.value for d in decisions]
    assert min(applied) < 64
    assert state.restart[Role.INTERACTIVE].restart_times_s


def test_the_ceiling_is_raised_geometrically_when_the_target_outgrows_it() -> None:
    pool = FluidPool(
        interactive_load_seqs=400.0,
        itl_per_seq_s=0.0001,
        replicas={Role.INTERACTIVE: 2, Role.MIXED: 0, Role.BATCH: 0},
        max_num_seqs={Role.INTERACTIVE: 8, Role.MIXED: 64, Role.BATCH: 256},
    )
    tuning = dataclasses.replace(
        FAST,
        bounds={**FAST.bounds, Role.MIXED: RoleBounds(min_replicas=0, max_replicas=0)},
    )
    decisions, state = run(pool, 200, tuning)
    ceilings = [d.roles[Role.INTERACTIVE].max_num_seqs.value for d in decisions]
    raises = [b for a, b in itertools.pairwise(ceilings) if b != a]
    assert raises and all(b > a for a, b in zip([8, *raises], raises, strict=False))
    assert all(b >= 2 * a or b == 256 for a, b in zip([8, *raises], raises, strict=False))
    assert len(state.restart[Role.INTERACTIVE].restart_times_s) == len(raises)


def test_running_cap_is_the_last_target_under_the_ceiling() -> None:
    assert running_cap(64, LocalState()) == 64
    assert running_cap(64, LocalState(target_max_num_seqs=16)) == 16
    assert running_cap(64, LocalState(target_max_num_seqs=128)) == 64


def test_decide_ceiling_keeps_or_raises_through_the_restart_gates() -> None:
    bounds = RoleBounds(min_replicas=0, max_replicas=4, max_batch_size_seqs=100)
    tuning = RestartTuning()
    lower = Verdict(10, Reason.BATCH_SIZE_LATENCY_BACKPRESSURE, "halve")
    kept, state = decide_ceiling(0.0, 32, lower, bounds, tuning, RestartState())
    assert (kept.value, kept.reason) == (32, Reason.BATCH_SIZE_VIA_GATEWAY)
    assert "no restart" in kept.message and state == RestartState()
    higher = Verdict(40, Reason.BATCH_SIZE_INCREASE, "grow")
    waiting, state = decide_ceiling(0.0, 32, higher, bounds, tuning, RestartState())
    assert (waiting.value, waiting.reason) == (32, Reason.RESTART_DWELLING)
    raised, state = decide_ceiling(tuning.dwell_s, 32, higher, bounds, tuning, state)
    assert (raised.value, raised.reason) == (64, Reason.RESTART_APPLIED)
    capped, _ = decide_ceiling(
        0.0,
        64,
        Verdict(90, Reason.BATCH_SIZE_INCREASE, ""),
        bounds,
        tuning,
        RestartState(pending_target_seqs=100, pending_since_s=-1e9),
    )
    assert capped.value == 100
