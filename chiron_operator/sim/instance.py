"""One vLLM pod under continuous batching: admission, KV-cache accounting, preemption.

At each iteration boundary the scheduler (in both step modes):

- makes room for the running sequences' next tokens, preempting the most recently admitted
  (lowest priority first) while the KV cache would overflow. This is vLLM's recompute
  preemption: the victim returns to the head of the waiting queue keeping its emitted tokens,
  and later prefills prompt + emitted tokens again. After a preemption nothing is admitted at
  that boundary, as in vLLM's scheduler;
- otherwise admits from the head of the waiting queue (interactive first when
  priority-scheduled) while the batch-size cap and the KV cache allow; head-of-line blocking,
  no skipping. On a priority-scheduled (mixed) pod an interactive head that does not fit
  evicts batch sequences, most recent first, until it does (vLLM's priority preemption). A
  sequence needs prompt + emitted + 1 KV tokens to be admitted, and every running sequence one
  more token per iteration.

The time between boundaries is a segment (see `iterations`). FAST mode makes a segment as long
as nothing can change: up to the first completion (a heap keyed by the iteration at which each
sequence finishes) or the first step the KV cache cannot hold; an arrival that could be
admitted cuts the segment at the next whole iteration. EXACT mode caps a segment at one
iteration, i.e. plain iteration stepping with the same arithmetic; a test checks they agree.
"""

from __future__ import annotations

import math
from collections import deque
from enum import IntEnum
from heapq import heappop, heappush

from chiron_operator.core.enums import Role
from chiron_operator.sim.iterations import IterationClock
from chiron_operator.sim.latency import LatencyModel
from chiron_operator.sim.live import INTERACTIVE_PRIORITY, LiveRequest


class InstanceState(IntEnum):
    """Lifecycle of a pod: STARTING (cold start) -> READY -> DRAINING -> TERMINATED."""

    STARTING = 0
    READY = 1
    DRAINING = 2
    TERMINATED = 3


class Instance(IterationClock):
    """A vLLM pod. The engine calls `enqueue` on dispatch and, at each boundary event,
    `end_segment` then `start_segment`; both give the time of the next boundary to schedule.
    `version` invalidates boundary events scheduled before a change of plan."""

    __slots__ = (
        "_finish",
        "_serial",
        "created_s",
        "exact",
        "gpus",
        "instance_id",
        "max_num_seqs",
        "n_waiting",
        "name",
        "predecessor",
        "priority_scheduling",
        "ready_s",
        "role",
        "running",
        "scheduled_s",
        "state",
        "successor",
        "terminated_s",
        "version",
        "waiting",
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
        exact: bool = False,
    ) -> None:
        super().__init__(latency)
        self.instance_id = instance_id
        self.name = f"{role.value}-{instance_id}"
        self.role = role
        self.max_num_seqs = max_num_seqs
        self.gpus = gpus
        self.priority_scheduling = priority_scheduling
        self.exact = exact
        self.state = InstanceState.STARTING
        self.created_s = created_s
        self.ready_s = math.nan
        self.terminated_s = math.nan
        self.successor: Instance | None = None
        self.predecessor: Instance | None = None
        # Index = priority slot; FCFS pods put every request in slot 0.
        self.waiting: tuple[deque[LiveRequest], deque[LiveRequest]] = (deque(), deque())
        # Dicts keep admission order, so the last key is the most recently admitted.
        self.running: tuple[dict[LiveRequest, None], dict[LiveRequest, None]] = ({}, {})
        self.n_waiting = 0
        self.version = 0
        self.scheduled_s = math.inf
        self._finish: list[tuple[int, int, LiveRequest]] = []
        self._serial = 0

    # -- load, as the router and the scrapes see it ------------------------------------------

    @property
    def load(self) -> int:
        """Requests on the pod (running + waiting), the join-shortest-queue measure."""
        return self.n_running + self.n_waiting

    def interactive_load(self) -> int:
        """Interactive running + waiting; exact on priority-scheduled pods, else all load."""
        if not self.priority_scheduling:
            return self.n_running + self.n_waiting
        return len(self.running[0]) + len(self.waiting[0])

    def interactive_counts(self) -> tuple[int, int]:
        """(running, waiting) interactive requests, by scanning (scrape time only)."""
        running = sum(1 for group in self.running for r in group if r.is_interactive)
        waiting = sum(1 for group in self.waiting for r in group if r.is_interactive)
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
        evicts = (
            self.priority_scheduling and head.priority == INTERACTIVE_PRIORITY and self.running[1]
        )
        if not evicts and seqs >= self.max_num_seqs:
            return None  # full until a completion, which ends the segment anyway
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
        finish = self._finish
        iteration = self.iteration
        done: list[LiveRequest] = []
        if not finish or finish[0][0] > iteration:
            return done  # a boundary for an admission, or the KV cache's limit
        while finish and finish[0][0] <= iteration:
            _, serial, request = heappop(finish)
            if request.running_on is self and request.admit_serial == serial:
                self._complete(request, now)
                done.append(request)
        return done

    def _complete(self, request: LiveRequest, now: float) -> None:
        del self.running[request.priority if self.priority_scheduling else 0][request]
        self.n_running -= 1
        self.context_tokens -= request.prompt_tokens + request.output_tokens
        request.generated = request.output_tokens
        request.completion_s = request.last_token_s = now
        request.running_on = None

    def start_segment(self, now: float) -> float | None:
        """Schedule at the boundary `now`: preempt, evict, admit, then start the next segment.
        Returns the segment's end time, or None when the pod has nothing to run."""
        preempted = self.context_tokens + self.n_running > self.kv_capacity_tokens
        if preempted:
            self._make_room_for_decode(now)  # and admit nothing at this boundary, as vLLM
        elif self.n_waiting:
            self._admit(now)
        if not self.n_running:
            self.scheduled_s = math.inf
            return None
        finish = self._finish
        first = finish[0]
        while first[2].admit_serial != first[1] or first[2].running_on is not self:
            heappop(finish)  # stale: preempted or aborted since it was pushed
            first = finish[0]
        # Until that first completion; after a preemption the next boundary may admit (an
        # interactive request that now fits, say), so it must be a real one.
        single = self.exact or (preempted and self.n_waiting > 0)
        end = self._begin_segment(now, first[0], single)
        self.version += 1
        self.scheduled_s = end
        return end

    # -- scheduling at a boundary -------------------------------------------------------------

    def _make_room_for_decode(self, now: float) -> None:
        """Preempt until every running sequence's next token fits."""
        while self.n_running and self.context_tokens + self.n_running > self.kv_capacity_tokens:
            running = self.running[1] if self.running[1] else self.running[0]
            self._preempt(next(reversed(running)), now)

    def _preempt(self, request: LiveRequest, now: float) -> None:
        slot = request.priority if self.priority_scheduling else 0
        del self.running[slot][request]
        self.n_running -= 1
        emitted = request.output_tokens - (request.finish_iter - self.iteration)
        self.context_tokens -= request.prompt_tokens + emitted
        request.generated = emitted
        request.last_token_s = now
        request.running_on = None
        request.preemptions += 1
        self.counters.preemptions += 1
        self.waiting[slot].appendleft(request)
        self.n_waiting += 1

    def _admit(self, now: float) -> None:
        """Admit from the queue head while it fits; on a priority-scheduled pod an interactive
        head that does not fit evicts batch sequences (most recent first) until it does, so
        that no later boundary of the segment could admit more."""
        waiting, running, finish = self.waiting, self.running, self._finish
        capacity, cap = self.kv_capacity_tokens, self.max_num_seqs
        priority_scheduling = self.priority_scheduling
        iteration = self.iteration
        while True:
            queue = waiting[0] or waiting[1]
            if not queue:
                return
            request = queue[0]
            tokens = request.prompt_tokens + request.generated
            seqs = self.n_running
            if seqs >= cap or self.context_tokens + seqs + tokens + 1 > capacity:
                if not (priority_scheduling and request.is_interactive and running[1]):
                    return  # head-of-line blocking
                self._preempt(next(reversed(running[1])), now)
                continue
            queue.popleft()
            self.n_waiting -= 1
            self.n_running = seqs + 1
            self.context_tokens += tokens
            self._serial = serial = self._serial + 1
            finish_iter = iteration + request.output_tokens - request.generated
            request.admit_serial = serial
            request.running_on = self
            request.finish_iter = finish_iter
            running[request.priority if priority_scheduling else 0][request] = None
            heappush(finish, (finish_iter, serial, request))
            self._queue_prefill(request, tokens)

    # -- shutdown -----------------------------------------------------------------------------

    def take_waiting(self) -> list[LiveRequest]:
        """Remove and return the waiting requests (they never started here or were preempted)."""
        taken = [*self.waiting[0], *self.waiting[1]]
        self.waiting[0].clear()
        self.waiting[1].clear()
        self.n_waiting = 0
        return taken

    def abort_all(self, now: float) -> list[LiveRequest]:
        """Abort everything (SIGTERM after the grace period); returns the requests to re-queue,
        each keeping the tokens it already emitted."""
        self.advance_to(now)
        in_prefill = set(self._prefilling)
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
