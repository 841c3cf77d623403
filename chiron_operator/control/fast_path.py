"""The fast path of the local controller: a gateway caps pods at the target, no restart.

With the pool's gateway on, every pod admits at most min(--max-num-seqs, its role's target)
requests, and the target changes within a second of the operator publishing it. The
Deployment's --max-num-seqs is then only a ceiling: a target below it costs nothing, and the
restart-aware layer (`restart.decide_restart`, with its hysteresis, dwell and budget) is asked
only to raise the ceiling when the target must go above it. It raises it geometrically (at
least doubling, capped by the role's bound), so a growing target restarts pods a handful of
times in a pool's life rather than at every step, and it never lowers it.

A change that applies at once has a cost the slow path's dwell used to hide: the signals lag
it. The mean ITL is taken over `itl_window_s` and throughput over the rate window, both read a
scrape (or more) late, and the ITL EWMA remembers older samples still: for a while after a
change they describe the old size. Acting on them again in the same direction compounds the
move on no evidence: a 60 s rate still made at 32 sequences halved the 70B pool's caps tick
after tick, from 32 to 1 (simulated attainment 0.85 -> 0.29). So a move the same way as the
last change settles (`Coverage`): it waits until the signal it moves on comes from a window
that began after the change (a decrease lands only once the pods have drained to the new cap),
and then for the ITL EWMA restarted at the new size to agree (`local`). A move the other way
needs no wait: the lag biases the signals towards the old size, i.e. against that move, so
they can only understate the case for it. An ITL sample that proves even the new size over
target cuts a decrease's settle short (`straddled_itl_emergency`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from chiron_operator.control.restart import decide_restart
from chiron_operator.core.decision import Verdict
from chiron_operator.core.enums import Reason, Role
from chiron_operator.core.snapshot import PoolSnapshot, itl_window_s
from chiron_operator.core.state import LocalState, RestartState
from chiron_operator.core.tuning import PoolTuning, RestartTuning, RoleBounds

# Float slack when a window's start meets the change time exactly (a scrape at the tick).
_CLOCK_EPS_S = 1e-6


def first_target(state: LocalState, applied_seqs: int, bounds: RoleBounds) -> LocalState:
    """`state` with the gateway's first cap for a role it has none for: the initial size.

    A new role behind the gateway runs the ceiling (`RoleBounds.deployment_seqs`, the role's
    max); its pods start capped at the initial batch size, where the slow path starts too.
    """
    if state.target_max_num_seqs is not None:
        return state
    return replace(state, target_max_num_seqs=min(applied_seqs, bounds.initial_batch_size_seqs))


def gateway_view(snapshot: PoolSnapshot, caps: Mapping[Role, int]) -> PoolSnapshot:
    """The snapshot with every pod's --max-num-seqs replaced by the cap the gateway applies.

    How full a pod is (the busy test of interactive backpressure, the mixed pods' idle room
    of the batch rule) is measured against what it may admit: a 70B mixed pod capped at 20 of
    its 64 runs full at 20. Judged against the ceiling it never read as busy, and the pool
    held while the gateway queued interactive requests (docs/BENCHMARKS.md).
    """
    roles = {}
    for role, found in snapshot.roles.items():
        cap = caps.get(role)
        if cap is None:
            roles[role] = found
            continue
        pods = tuple(
            replace(p, max_num_seqs=max(1, min(p.max_num_seqs or cap, cap))) for p in found.pods
        )
        roles[role] = replace(found, pods=pods)
    return replace(snapshot, roles=roles)


def running_cap(applied_seqs: int, state: LocalState) -> int:
    """What the pods run now: the gateway's cap, i.e. the last target under the ceiling."""
    target = state.target_max_num_seqs
    return applied_seqs if target is None else max(1, min(applied_seqs, target))


@dataclass(frozen=True, slots=True)
class SignalClock:
    """What the settle rule needs to know of a tick: when, how signals are measured, and the
    ceiling (a target above --max-num-seqs changes nothing the pods run)."""

    now_s: float
    rate_window_s: float
    itl_window_s: float
    ceiling_seqs: int

    @classmethod
    def of(cls, now_s: float, tuning: PoolTuning, ceiling_seqs: int) -> SignalClock:
        itl_s = itl_window_s(tuning.scrape_interval_s, tuning.rate_window_s)
        return cls(now_s, tuning.rate_window_s, itl_s, ceiling_seqs)


def judged_size(
    now_s: float, applied_seqs: int, tuning: PoolTuning, state: LocalState
) -> tuple[int, SignalClock | None]:
    """The size the local controller judges, and the clock of the settle rule (None: slow path).

    Without a gateway the pods run --max-num-seqs; with one, the last target under it.
    """
    if not tuning.fast_path:
        return applied_seqs, None
    return running_cap(applied_seqs, state), SignalClock.of(now_s, tuning, applied_seqs)


@dataclass(frozen=True, slots=True)
class Coverage:
    """Whether the signals were measured wholly at the size the pods run now.

    `direction` is the last change's (+1 grew, -1 shrank, 0 none known) and `changed` names it;
    `changed_at_s` is when it landed and `since_s` how long ago. `itl_to_go_s` and
    `rate_to_go_s` say how long until a sample of the same age has a mean-ITL window
    (`itl_window_s`) or a rate window (`rate_window_s`) that begins after it: 0 once it does.
    """

    direction: int = 0
    changed: str = ""
    changed_at_s: float | None = None
    since_s: float = 0.0
    itl_window_s: float = 0.0
    rate_window_s: float = 0.0
    itl_to_go_s: float = 0.0
    rate_to_go_s: float = 0.0

    @property
    def itl(self) -> bool:
        return self.itl_to_go_s <= 0.0

    @property
    def rate(self) -> bool:
        return self.rate_to_go_s <= 0.0

    def lagging(self, *, reads_itl: bool) -> str | None:
        """Why a move the same way as the last change must wait, or None.

        A role with an ITL objective moves on its ITL (LBP; TBP judges an increase later, on
        a rate window wholly at the new size, see `local`), a role without one on its
        throughput rate (TBP): the move waits for that signal's window to begin after the
        change.
        """
        if reads_itl:
            to_go_s, signal, window_s = self.itl_to_go_s, "mean-ITL", self.itl_window_s
        else:
            to_go_s, signal, window_s = self.rate_to_go_s, "throughput", self.rate_window_s
        if to_go_s <= 0.0:
            return None
        return (
            f"settling: the last change ({self.changed}) {self.since_s:.0f} s ago, and the "
            f"{signal} window ({window_s:.0f} s) still reaches back before it: {to_go_s:.0f} s "
            "to go"
        )


SETTLED = Coverage()


def coverage(
    clock: SignalClock, state: LocalState, measured: int, sample: tuple[float, float]
) -> Coverage:
    """How the signals of a sample (its age, the most requests one pod runs) stand against
    the last change.

    A window covers the new size when it begins at or after the change; a sample taken at
    `now - age` over a window W begins at `now - age - W`. A decrease lands only when the
    pods have drained to the new cap (the gateway admits nothing new meanwhile, but what
    runs, runs to its end): until a sample shows no pod above it, it is dated now. The pods
    running another size than the last change left them (a ceiling raised by a restart, a
    bound edited) is a change too, dated now: when it landed is not known.
    """
    sample_age_s, peak_running = sample
    last = _last_change(clock.now_s, state, measured)
    if last is None:
        return SETTLED
    changed_s, before, after = last
    if after < before and peak_running > after:
        changed_s = clock.now_s
    start_s = clock.now_s - sample_age_s
    return Coverage(
        direction=(after > before) - (after < before),
        changed=f"{before} -> {after}",
        changed_at_s=changed_s,
        since_s=max(0.0, clock.now_s - changed_s),
        itl_window_s=clock.itl_window_s,
        rate_window_s=clock.rate_window_s,
        itl_to_go_s=_to_go_s(changed_s, clock.itl_window_s, start_s),
        rate_to_go_s=_to_go_s(changed_s, clock.rate_window_s, start_s),
    )


def _to_go_s(changed_s: float, window_s: float, sample_s: float) -> float:
    return max(0.0, changed_s + window_s - sample_s - _CLOCK_EPS_S)


def _last_change(now_s: float, state: LocalState, measured: int) -> tuple[float, int, int] | None:
    after = state.last_change_to_seqs
    if after is not None and after != measured:
        return now_s, after, measured
    if state.last_change_s is None or state.last_change_from_seqs is None or after is None:
        return None
    return state.last_change_s, state.last_change_from_seqs, after


def straddled_itl_emergency(
    itl_s: float, itl_target_s: float, decrease_factor: float
) -> str | None:
    """Why an ITL sample that straddles a decrease already calls for another, or None.

    After scaling a batch by f, ITL = a + b x batch with a >= 0 (decode time grows with the
    batch from the cost of reading the weights, as the measured step-time tables do) leaves
    the new size at least f times the old size's ITL, and a window straddling the change mixes
    the two, so it is at most the old one. A straddling sample S at or above target / f thus
    proves the new size is at or above target: waiting for a clean window only prolongs the
    breach. Below it the sample may be the old size talking, and the decrease waits.
    """
    limit_s = itl_target_s / decrease_factor
    if not itl_s >= limit_s:  # NaN: no proof
        return None
    return (
        f"ITL {itl_s * 1000:.0f} ms, even with the old size in its window, is at least "
        f"target / {decrease_factor:g} = {limit_s * 1000:.0f} ms: the new size is over target "
        "too"
    )


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
