"""How long a new pod of this pool takes to serve: learned from the pods the controller saw start.

A pod is first seen not ready (scheduled, pulling its image, loading weights) and later ready;
the time between is one observation of the pool's startup. The global controller needs it
wherever capacity it adds now only helps later: batch instances started with a deadline minutes
away deliver only for the time that is left once they are ready (`batch_scaling`).

Observations are smoothed (an EWMA, `STARTUP_WEIGHT_RATIO`), since image pulls and node
provisioning vary. Before the first one, the tuning's prior stands in
(`GlobalTuning.startup_prior_s`). A pod that disappears before it is ready teaches nothing, and
a pod ready at the first sight of it (the operator restarted, or it started between two ticks
of a long interval) neither: its start was not seen.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from chiron_operator.core.snapshot import PoolSnapshot
from chiron_operator.core.state import GlobalState
from chiron_operator.core.tuning import PoolTuning

STARTUP_WEIGHT_RATIO: Final = 0.3
"""Weight of the newest startup in the EWMA: a slower node pool shows within a few pods."""


def observe_startups(snapshot: PoolSnapshot, state: GlobalState) -> GlobalState:
    """`state` with the pods now starting remembered and those now ready counted."""
    since = dict(state.starting_since_s)
    estimate = state.startup_s
    present = set()
    for pod in snapshot.all_pods():
        present.add(pod.name)
        first_s = since.get(pod.name)
        if not pod.ready:
            since.setdefault(pod.name, snapshot.now_s)
        elif first_s is not None:
            del since[pod.name]
            observed = max(0.0, snapshot.now_s - first_s)
            estimate = _smooth(estimate, observed)
    since = {name: s for name, s in since.items() if name in present}
    return replace(state, startup_s=estimate, starting_since_s=since)


def _smooth(previous: float | None, observed: float) -> float:
    if previous is None:
        return observed
    return STARTUP_WEIGHT_RATIO * observed + (1.0 - STARTUP_WEIGHT_RATIO) * previous


def startup_s(tuning: PoolTuning, state: GlobalState) -> float:
    """The pool's startup estimate, seconds: learned, or the prior until a start was seen."""
    if state.startup_s is None:
        return tuning.global_scaling.startup_prior_s
    return state.startup_s
