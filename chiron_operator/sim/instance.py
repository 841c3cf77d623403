"""One vLLM pod under continuous batching: admission, KV-cache accounting, preemption.

At each iteration boundary the scheduler (in both step modes):

- makes room for the running sequences' next tokens, preempting the most recently admitted
  (lowest priority first) while the KV cache would overflow. This is vLLM's recompute
  preemption: the victim returns to the head of the waiting queue keeping its emitted tokens,
  and later prefills prompt + emitted tokens again. After a preemption nothing is admitted at
  that boundary, as in vLLM's scheduler;
- gives the rest of its prompt, up to the step's token budget left after one token per decoding
  sequence, to a sequence whose prompt was cut at an earlier boundary (chunked prefill, vLLM
  V1's default: see `vllm_defaults`);
- otherwise admits from the head of the waiting queue (interactive first when
  priority-scheduled) while the batch-size cap, the KV cache and (chunked) the token budget
  allow; head-of-line blocking, no skipping. With chunked prefill the last admitted prompt may
  get only what is left of the budget and continue at the next steps. On a priority-scheduled
  (mixed) pod an interactive head that does not fit evicts batch sequences, most recent first,
  until it does (vLLM's priority preemption). A
  sequence needs prompt + emitted + 1 KV tokens to be admitted, and every running sequence one
  more token per iteration. The KV tokens of a chunked prompt are all held from its admission
  (vLLM allocates blocks chunk by chunk; holding them early is the conservative side).

The time between boundaries is a segment (see `iterations`). FAST mode makes a segment as long
as nothing can change: up to the first completion (a heap keyed by the iteration at which each
sequence finishes), the first step the KV cache cannot hold, or the step before a chunked
prompt's last chunk (which leaves budget to admit more); an arrival that could be admitted cuts
the segment at the next whole iteration (never while a chunk uses the whole budget), and so
does a queue the budget alone kept out. EXACT mode caps a segment at one iteration, i.e. plain
iteration stepping with the same arithmetic; a test checks they agree.
"""

from __future__ import annotations

import math
from collections import deque
from enum import IntEnum
from heapq import heappop, heappush
from operator import attrgetter

from chiron_operator.core.enums import Role
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.perfmodel.vllm_defaults import DEFAULT_MAX_NUM_BATCHED_TOKENS
from chiron_operator.sim.iterations import IterationClock
from chiron_operator.sim.live import INTERACTIVE_PRIORITY, LiveRequest

# No completion scheduled (only a prompt being prefilled in chunks runs).
_NEVER = 1 << 62
_IS_INTERACTIVE = attrgetter("is_interactive")


class InstanceState(IntEnum):
    """Lifecycle of a pod: STARTING (cold start) -> READY -> DRAINING -> TERMINATED."""

    STARTING = 0
    READY = 1
    DRAINING = 2
    TERMINATED = 3


class Instance(IterationClock):
    """A vLLM pod. The engine calls `enqueue` on dispatch and, at each boundary event,
    `end_segment` then `start_segment`; both give the time of the next boundary to schedule.
    `version` invalidates boundary events scheduled before a change of plan.
    `max_num_batched_tokens` is the step's token budget with chunked prefill; None turns
    chunking off (whole prompts, no budget: the simulator's original scheduler)."""

    __slots__ = (
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
        max_num_batched_tokens: int | None = DEFAULT_MAX_NUM_BATCHED_TOKENS,
    ) -> None:
        # vLLM refuses a budget below max_num_seqs, so every running sequence always fits.
        budget = 0 if max_num_batched_tokens is None else max(max_num_batched_tokens, max_num_seqs)
        super().__init__(latency, budget)
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
        evicts = (
            self.priority_scheduling and head.priority == INTERACTIVE_PRIORITY and self.running[1]
        )
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
        self.version += 1
        self.scheduled_s = end
        return end

    # -- scheduling at a boundary -------------------------------------------------------------

    def _schedule_chunked(self, now: float, preempted: bool) -> bool:
        """The step's token budget: one token per decoding sequence, then the rest of the cut
        prompt, then admissions (none after a preemption), as vLLM V1's scheduler does.
        True when the budget ran out with requests waiting that the next step has room for."""
        partial = self._partial
        room = self._budget - self.n_running
        if partial is not None:
            room = self._next_chunk(partial, room + 1)  # the cut prompt does not decode
        if room > 0 and self.n_waiting and not preempted:
            room = self._admit(now, room)
        return (
            not room
            and self.n_waiting > 0
            and self._partial is None
            and self.n_running < self.max_num_seqs
        )

    def _make_room_for_decode(self, now: float) -> None:
        """Preempt until every running sequence's next token fits."""
        while self.n_running and self.context_tokens + self.n_running > self.kv_capacity_tokens:
            running = self.running[1] if self.running[1] else self.running[0]
            self._preempt(next(reversed(running)), now)

    def _preempt(self, request: LiveRequest, now: float) -> None:
        slot = request.priority if self.priority_scheduling else 0
        del self.running[slot][request]
        self.n_running -= 1
        if request is self._partial:
            emitted = request.generated  # its prompt was never finished
        else:
            emitted = request.output_tokens - (request.finish_iter - self.iteration)
        if self._chunks or request is self._partial:
            self._drop_from_head(request)
        self.context_tokens -= request.prompt_tokens + emitted
        request.generated = emitted
        request.last_token_s = now
        request.running_on = None
        request.preemptions += 1
        self.counters.preemptions += 1
        self.waiting[slot].appendleft(request)
        self.n_waiting += 1

    def _admit(self, now: float, room: int) -> int:
        """Admit from the queue head while it fits; on a priority-scheduled pod an interactive
        head that does not fit evicts batch sequences (most recent first) until it does, so
        that no later boundary of the segment could admit more. `room` is the token budget
        left for prompts (chunked prefill), or -1 for whole prompts without a budget; returns
        what is left of it."""
        waiting, running, finish = self.waiting, self.running, self._finish
        capacity, cap = self.kv_capacity_tokens, self.max_num_seqs
        priority_scheduling = self.priority_scheduling
        iteration = self.iteration
        while True:
            queue = waiting[0] or waiting[1]
            if not queue:
                return room
            request = queue[0]
            tokens = request.prompt_tokens + request.generated
            seqs = self.n_running
            if seqs >= cap or self.context_tokens + seqs + tokens + 1 > capacity:
                if not (priority_scheduling and request.is_interactive and running[1]):
                    return room  # head-of-line blocking
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
            running[request.priority if priority_scheduling else 0][request] = None
            if tokens > room >= 0:
                self._cut_prompt(request, tokens, room)  # it finishes once its prompt does
                return 0
            request.finish_iter = finish_iter
            heappush(finish, (finish_iter, serial, request))
            if room < 0:
                self._queue_prefill(request, tokens)
                continue
            room = self._whole_prompt(request, tokens, room)
            if not room:
                return 0

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
