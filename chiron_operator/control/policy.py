"""The one interface every policy (Chiron and the baselines) offers its drivers.

A policy is a pure function `decide(snapshot, tuning, state) -> (decision, state)`. Drivers (the
operator, the simulator) hold a `BoundPolicy`: the function with its tuning bound, plus the
state to start from, so they can drive Chiron and every baseline the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from chiron_operator.core.decision import PoolDecision
from chiron_operator.core.snapshot import PoolSnapshot

TuningT = TypeVar("TuningT")
StateT = TypeVar("StateT")

DecideFn = Callable[[PoolSnapshot, TuningT, StateT], tuple[PoolDecision, StateT]]


@dataclass(frozen=True, slots=True)
class BoundPolicy(Generic[TuningT, StateT]):
    """A named policy with its tuning bound; `step` is the pure decide on that tuning."""

    name: str
    tuning: TuningT
    decide_fn: DecideFn[TuningT, StateT]
    initial_state: StateT

    def step(self, snapshot: PoolSnapshot, state: StateT) -> tuple[PoolDecision, StateT]:
        return self.decide_fn(snapshot, self.tuning, state)
