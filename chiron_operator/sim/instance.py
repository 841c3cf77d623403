"""One vLLM pod under continuous batching: dispatch, segments, aborts and its lifecycle.

At each iteration boundary the pod ends its segment (completions), drops the sequences aborted
meanwhile, then schedules (`scheduling`: KV-pressure preemption, chunked prefill, admission,
in both step modes) and starts the next segment. A waiting request never evicts a running one
at the `--max-num-seqs` cap unless the pod models a vLLM with the fix for upstream issue 40004
(`preempt_for_priority`); only KV pressure preempts.

The time between boundaries is a segment (see `iterations`). FAST mode makes a segment as long
as nothing can change: up to the first completion (a heap keyed by the iteration at which each
sequence finishes), the first step the KV cache cannot hold, or the step before a chunked
prompt's last chunk (which leaves budget to admit more); an arrival that could be admitted cuts
the segment at the next whole iteration (never while a chunk uses the whole budget), and so
does a queue the budget alone kept out, and an abort (vLLM frees an aborted request between
steps). EXACT mode caps a segment at one iteration, i.e. plain iteration stepping with the same
arithmetic; a test checks they agree.
"""

from __future__ import annotations

import math
from enum import IntEnum
from heapq import heappop
from operator import attrgetter

from chiron_operator.core.enums import Role
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.perfmodel.vllm_defaults import DEFAULT_MAX_NUM_BATCHED_TOKENS
from chiron_operator.sim.live import INTERACTIVE_PRIORITY, LiveRequest
from chiron_operator.sim.scheduling import PodScheduler

# No completion scheduled (only a prompt being prefilled in chunks runs).
_NEVER = 1 << 62
_IS_INTERACTIVE = attrgetter("is_interactive")


class InstanceState(IntEnum):
    """Lifecycle of a pod: STARTING (cold start) -> READY -> DRAINING -> TERMINATED."""

    STARTING = 0
    READY = 1
    DRAINING = 2
    TERMINATED = 3


class Instance(PodScheduler):
    """A vLLM pod. The engine calls `enqueue` on dispatch and, at each boundary event,
    `end_segment` then `start_segment`; both give the time of the next boundary to schedule.
    `version` invalidates boundary events scheduled before a change of plan.
    `max_num_batched_tokens` is the step's token budget with chunked prefill; None turns
    chunking off (whole prompts, no budget: the simulator's original scheduler).
    `preempt_for_priority` models a vLLM with the fix for upstream issue 40004 (see
    `scheduling`); it applies to priority-scheduled pods only."""

    __slots__ = (
        "_aborting",
        "created_s",
        "exact",
        "first_batch_tokens",
        "gpus",
        "instance_id",
        "name",
        "predecessor",
        "ready_s",
        "released",
        "role",
        "scheduled_s",
        "state",
        "successor",
        "terminated_s",
        "version",
    )

    def __init__(
        self,
        instance_id: int,
        role: Role,
        max_num_seqs: int,
        latency: LatencyModel,
        *,
        created_s: float,
        gpus: int = 1,
        priority_scheduling: bool = False,
        preempt_for_priority: bool = False,
        exact: bool = False,
        max_num_batched_tokens: int | None = DEFAULT_MAX_NUM_BATCHED_TOKENS,
    ) -> None:
        # vLLM refuses a budget below max_num_seqs, so every running sequence always fits.
        budget = 0 if max_num_batched_tokens is None else max(max_num_batched_tokens, max_num_seqs)
        super().__init__(
            latency,
            max_num_seqs,
            budget,
            priority_scheduling=priority_scheduling,
            preempt_for_priority=preempt_for_priority,
        )
        self.instance_id = instance_id
        self.name = f"{role.value}-{instance_id}"
        self.role = role
        self.gpus = gpus
        self.exact = exact
        self.state = InstanceState.STARTING
        self.created_s = created_s
        self.ready_s = math.nan
        self.terminated_s = math.nan
        self.successor: Instance | None = None
        self.predecessor: Instance | None = None
        self.version = 0
        self.scheduled_s = math.inf
        # Running sequences aborted mid-segment, dropped at the segment's (cut) end; then they
        # are `released`, for the cluster to collect (a resend waits for it: see `cluster`).
        self._aborting: list[LiveRequest] = []
        self.released: list[LiveRequest] = []
        # Batch requests whose first token the head just planned produces, for the gateway's
        # router (which paces batch prefills); None when nobody asks (set by the cluster).
        self.first_batch_tokens: list[LiveRequest] | None = None

    # -- load, as the routers and the scrapes see it -----------------------------------------

    @property
    def load(self) -> int:
        """Requests on the pod (running + waiting), the join-shortest-queue measure."""
        return self.n_running + self.n_waiting

    def interactive_counts(self) -> tuple[int, int]:
        """(running, waiting) interactive requests (scrape time only): slot 0 on a
        priority-scheduled pod, else by scanning (summing the flags in C)."""
        if self.priority_scheduling:
            return len(self.running[0]), len(self.waiting[0])
        running = sum(map(_IS_INTERACTIVE, self.running[0]))
        waiting = sum(map(_IS_INTERACTIVE, self.waiting[0]))
        return running, waiting

    def kv_usage_ratio(self) -> float:
        return self.context_tokens / self.kv_capacity_tokens

    # -- dispatch -----------------------------------------------------------------------------

    def enqueue(self, request: LiveRequest, now: float) -> float | None:
        """Put a request in the waiting queue; the boundary time to (re)schedule, or None."""
        request.pod_dispatch_s = now
        self.waiting[request.priority if self.priority_scheduling else 0].append(request)
        self.n_waiting += 1
        if self._idle:
            if self.scheduled_s <= now:
                return None  # a boundary is already due now
            self.scheduled_s = now
            self.version += 1
            return now
        if self.exact:
            return None  # every iteration ends at a boundary anyway
        return self._cut_for_admission(now)

    def _cut_for_admission(self, now: float) -> float | None:
        """End the segment at the next whole iteration if the queue head could start there;
        otherwise keep it (nothing the head waits for happens before it ends)."""
        waiting = self.waiting
        head = waiting[0][0] if waiting[0] else waiting[1][0]
        seqs = self.n_running
        evicts = self._evicts and head.priority == INTERACTIVE_PRIORITY and self.running[1]
        if not evicts and seqs >= self.max_num_seqs:
            return None  # full until a completion, which ends the segment anyway
        if self._seg_chunk:
            return None  # a chunk takes the whole budget until the segment's end
        upto = self._iterations_done(now) + 1
        if upto >= self._seg_len:
            return None
        steps = upto - self._head
        need = head.prompt_tokens + head.generated + 1
        if not evicts and self._seg_c0 + steps * seqs + seqs + need > self.kv_capacity_tokens:
            return None  # KV only fills up until a completion
        self._seg_len = upto
        self.version += 1
        # `_time_at(upto)`, inlined: upto >= 1 here.
        end = self._dec_t0 + (steps * self._step_s + self._growth_s * (steps * (steps - 1) // 2))
        self.scheduled_s = end
        return end

    def abort(self, request: LiveRequest, now: float) -> float | None:
        """Abort `request` here (its stream was closed: the gateway cut it off). vLLM frees it
        between steps: a waiting or between-segments one at once, a running one when the
        iteration in progress ends, which becomes a boundary. Its emitted tokens are lost.
        Returns the boundary time to schedule, or None; `pending_abort` says which it was."""
        if request.running_on is not self or self._idle:
            self.unschedule_aborted(request)
            if self._idle or self.exact or not self.n_waiting:
                return None
            return self._cut_for_admission(now)  # the new queue head may fit where it did not
        self._aborting.append(request)
        upto = self._iterations_done(now) + 1
        if self.exact or upto >= self._seg_len:
            return None  # the segment ends there anyway
        self._seg_len = upto
        self.version += 1
        self.scheduled_s = end = self._time_at(upto)
        return end

    def pending_abort(self, request: LiveRequest) -> bool:
        """Whether `request` was aborted here and is still running until the next boundary."""
        return request in self._aborting

    # -- boundaries ---------------------------------------------------------------------------

    def advance_to(self, now: float) -> None:
        """Account the iterations finished by `now` (for a scrape mid-segment)."""
        if not self._idle:
            self._account(self._iterations_done(now))

    def end_segment(self, now: float) -> list[LiveRequest]:
        """Close the segment ending at `now`; returns the requests that completed."""
        if not self._idle:
            self._account(self._seg_len)
            self._idle = True
        self.scheduled_s = now
        if self._aborting:
            # Before completions: an aborted sequence's last token is lost with the others.
            for request in self._aborting:
                self.unschedule_aborted(request)
            self.released.extend(self._aborting)
            self._aborting.clear()
        finish = self._finish
        iteration = self.iteration
        if not finish or finish[0][0] > iteration:
            return []  # a boundary for an admission, or the KV cache's limit
        done: list[LiveRequest] = []
        running, priority_scheduling = self.running, self.priority_scheduling
        freed = 0
        while finish and finish[0][0] <= iteration:
            _, serial, request = heappop(finish)
            if request.running_on is self and request.admit_serial == serial:
                # The completion, inlined (once per request); counts are settled below.
                del running[request.priority if priority_scheduling else 0][request]
                output_tokens = request.output_tokens
                freed += request.prompt_tokens + output_tokens
                request.generated = output_tokens
                request.completion_s = request.last_token_s = now
                request.running_on = None
                done.append(request)
        self.n_running -= len(done)
        self.context_tokens -= freed
        return done

    def _note_first_batch_tokens(self, started: list[LiveRequest]) -> None:
        """Add the batch requests whose first token the head just planned produces (the
        router is told when the head is planned, in FAST and EXACT mode alike: see `cluster`)."""
        for request in self._prefilling:
            if not request.is_interactive and not request.generated:
                started.append(request)

    def start_segment(self, now: float) -> float | None:
        """Schedule at the boundary `now`: preempt, evict, admit, then start the next segment.
        Returns the segment's end time, or None when the pod has nothing to run."""
        preempted = self.context_tokens + self.n_running > self.kv_capacity_tokens
        if preempted:
            self._make_room_for_decode(now)  # and admit nothing at this boundary, as vLLM
        # A waiting request kept out by the budget alone may start at the next step.
        blocked = False
        if self._budget:
            if self._partial is not None or self.n_waiting:
                blocked = self._schedule_chunked(now, preempted)
        elif self.n_waiting and not preempted:
            self._admit(now, -1)
        if not self.n_running:
            self.scheduled_s = math.inf
            return None
        finish = self._finish
        while finish:
            finish_iter, serial, request = finish[0]
            if request.admit_serial == serial and request.running_on is self:
                break
            heappop(finish)  # stale: preempted or aborted since it was pushed
        else:
            finish_iter = _NEVER
        # Until that first completion; after a preemption the next boundary may admit (an
        # interactive request that now fits, say), so it must be a real one.
        single = self.exact or blocked or (preempted and self.n_waiting > 0)
        end = self._begin_segment(now, finish_iter, single)
        if self.first_batch_tokens is not None:
            self._note_first_batch_tokens(self.first_batch_tokens)
        self.version += 1
        self.scheduled_s = end
        return end

    # -- shutdown -----------------------------------------------------------------------------

    def abort_all(self, now: float) -> list[LiveRequest]:
        """Abort everything (SIGTERM after the grace period); returns the requests to re-queue,
        each keeping the tokens it already emitted. Sequences aborted meanwhile are not among
        them: the gateway already queued them again."""
        self.advance_to(now)
        for request in self._aborting:
            del self.running[request.priority if self.priority_scheduling else 0][request]
            request.generated = 0
            request.running_on = None
        self.released.extend(self._aborting)
        self._aborting.clear()
        in_prefill = set(self._prefilling)
        if self._partial is not None:
            in_prefill.add(self._partial)
            self._partial = None
        last_token_s = self._time_at(self.iteration - self._seg_it0) if not self._idle else now
        aborted: list[LiveRequest] = []
        for running in self.running:
            for request in running:
                if request not in in_prefill:
                    left = request.finish_iter - self.iteration
                    request.generated = request.output_tokens - left
                    request.last_token_s = last_token_s
                request.running_on = None
                aborted.append(request)
            running.clear()
        aborted.extend(self.take_waiting())
        self.n_running = self.context_tokens = 0
        self._finish.clear()
        self._clear_prefill()
        self._idle = True
        self.version += 1
        self.scheduled_s = math.inf
        return aborted

    def terminate(self, now: float) -> None:
        """The pod is gone: no more events, GPU time stops."""
        self.state = InstanceState.TERMINATED
        self.terminated_s = now
        self.version += 1
        self.scheduled_s = math.inf
