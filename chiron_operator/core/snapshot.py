"""The frozen view of a pool that every controller decides on.

Drivers (the operator's Prometheus adapter, the simulator) build a `PoolSnapshot`; controllers
never look anywhere else. Time enters only as `PoolSnapshot.now_s`. A signal that could not be
read is NaN, never zero: zero is a real observation, and scaling down on a missing zero is the
failure mode the guard rails exist to prevent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from chiron_operator.core.enums import Role

NAN = math.nan


def is_known(value: float) -> bool:
    """True when a signal was observed (finite); NaN and infinities mean 'not known'."""
    return math.isfinite(value)


def itl_window_s(scrape_interval_s: float, window_s: float) -> float:
    """The range of the mean-ITL ratio: two scrape intervals, at most the rates' window.

    A left-open range of two intervals holds the newest two samples, the shortest stretch a
    rate can be taken over. The local controller acts on this ratio, and a longer range trails
    a real rise in latency by half its length: over a 60 s window, batch sizes stayed too large
    for a minute while the 70B pool's ITL climbed (simulated attainment 94% -> 87%).
    """
    return min(window_s, 2.0 * scrape_interval_s)


@dataclass(frozen=True, slots=True)
class PodSignals:
    """What Prometheus tells about one vLLM pod over the control window.

    Request counts are gauges at the end of the window (how full the pod is now). `mean_itl_s`
    is the mean gap between a running sequence's tokens over the newest scrape intervals
    (`itl_window_s`): the running gauge averaged over that range divided by the token rate
    over the same range, so both sides describe one stretch of time. Other latencies are the
    SLO percentile over the window. `interactive_*` are NaN when the source cannot split a
    mixed pod's load by class (real vLLM exports no per-priority gauges); controllers then
    treat all load as interactive.
    """

    name: str
    role: Role
    ready: bool
    max_num_seqs: int
    running_requests: float = NAN
    waiting_requests: float = NAN
    interactive_running_requests: float = NAN
    interactive_waiting_requests: float = NAN
    kv_cache_usage_ratio: float = NAN
    generation_tokens_per_s: float = NAN
    mean_itl_s: float = NAN
    itl_s: float = NAN
    ttft_s: float = NAN
    sample_age_s: float = math.inf


@dataclass(frozen=True, slots=True)
class RoleSnapshot:
    """One role's Deployment and its pods.

    `replicas` is the Deployment's current spec; `starting_replicas` are pods that exist but are
    not ready yet (capacity already on its way, which the guard rails count before adding more).
    """

    role: Role
    replicas: int
    ready_replicas: int
    starting_replicas: int
    max_num_seqs: int
    pods: tuple[PodSignals, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchGroup:
    """Batch requests that share a deadline (absolute, on the snapshot's clock)."""

    deadline_s: float
    queued_requests: int


@dataclass(frozen=True, slots=True)
class BatchQueue:
    """The batch backlog: groups by deadline and the output-length statistics learned online.

    `output_tokens_samples` is how many completed requests the mean and spread were estimated
    from: the mean's standard error is std / sqrt(samples), which the waiting-time bound adds
    (`control.waiting_time`). inf when the source cannot count them: the mean is then taken as
    exact. NaN would make the bound unknown.
    """

    groups: tuple[BatchGroup, ...] = ()
    output_tokens_mean: float = NAN
    output_tokens_std: float = NAN
    sample_age_s: float = math.inf
    output_tokens_samples: float = math.inf

    @property
    def queued_requests(self) -> int:
        return sum(g.queued_requests for g in self.groups)


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """A role's pods the scheduler could not place (PodScheduled False, reason Unschedulable).

    `since_s` is when the longest-waiting of them was found unschedulable, on the snapshot's
    clock: how long no node has fitted is what decides when to stop asking for more.
    """

    pods: int
    since_s: float


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """Everything a policy may know at time `now_s`.

    `metrics_age_s` is the age of the newest pool-wide sample (inf when the source answered
    nothing); `metrics_error` is a human-readable cause when the source failed outright.
    `unschedulable` lists the roles with pods no node fits (none: every pod was placed).
    """

    now_s: float
    roles: Mapping[Role, RoleSnapshot]
    batch_queue: BatchQueue = field(default_factory=BatchQueue)
    metrics_age_s: float = math.inf
    metrics_error: str = ""
    unschedulable: Mapping[Role, Unschedulable] = field(default_factory=dict)

    def role(self, role: Role) -> RoleSnapshot:
        """The role's snapshot; a role the pool does not run reads as zero replicas."""
        found = self.roles.get(role)
        if found is None:
            return RoleSnapshot(role, 0, 0, 0, 0)
        return found

    def all_pods(self) -> tuple[PodSignals, ...]:
        return tuple(p for r in self.roles.values() for p in r.pods)
