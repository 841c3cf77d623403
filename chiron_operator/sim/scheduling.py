"""What one vLLM pod's scheduler does at an iteration boundary: preempt, admit, abort.

- KV pressure: while the running sequences' next tokens would not fit, the most recently
  admitted is preempted (lowest priority first on a priority-scheduled pod), by recompute: it
  returns to the head of its waiting queue keeping its emitted tokens and later prefills prompt
  + emitted tokens again. Nothing is admitted at a boundary that preempted, as in vLLM.
- Admission: from the head of the waiting queue (interactive first when priority-scheduled)
  while the batch-size cap, the KV cache and (chunked) the token budget allow; head-of-line
  blocking, no skipping. A waiting request never evicts running work at the cap or for KV room:
  vLLM 0.32 does not (upstream issue 40004; measured on real vLLM: an interactive request waited
  for a batch request to finish, zero preemptions), and neither does the emulator by default.
  `preempt_for_priority` models a vLLM with the fix (the emulator's `--preempt-for-priority`):
  on a priority-scheduled pod an interactive head that does not fit then evicts batch
  sequences, most recent first, until it does.
- Abort (`unschedule_aborted`): a sequence whose client closed its stream leaves at a boundary
  with its KV freed and its emitted tokens lost; the gateway sends it again from scratch.

A sequence needs prompt + emitted + 1 KV tokens to be admitted, and every running sequence one
more token per iteration. The time between boundaries is `iterations`' business.
"""

from __future__ import annotations

from collections import deque
from heapq import heappush

from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.sim.iterations import IterationClock
from chiron_operator.sim.live import LiveRequest


class PodScheduler(IterationClock):
    """The waiting and running sequences of one pod and the scheduler's rules over them;
    `Instance` adds dispatch, segments and the pod's lifecycle."""

    __slots__ = (
        "_evicts",
        "_serial",
        "max_num_seqs",
        "n_waiting",
        "preempt_for_priority",
        "priority_scheduling",
        "running",
        "waiting",
    )

    def __init__(
        self,
        latency: LatencyModel,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        *,
        priority_scheduling: bool,
        preempt_for_priority: bool,
    ) -> None:
        super().__init__(latency, max_num_batched_tokens)
        self.max_num_seqs = max_num_seqs
        self.priority_scheduling = priority_scheduling
        self.preempt_for_priority = preempt_for_priority
        # Eviction needs both an order between classes and a vLLM that acts on it at the cap.
        self._evicts = priority_scheduling and preempt_for_priority
        # Index = priority slot; FCFS pods put every request in slot 0.
        self.waiting: tuple[deque[LiveRequest], deque[LiveRequest]] = (deque(), deque())
        # Dicts keep admission order, so the last key is the most recently admitted.
        self.running: tuple[dict[LiveRequest, None], dict[LiveRequest, None]] = ({}, {})
        self.n_waiting = 0
        self._serial = 0

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
        request.generated = self._unschedule(request)
        request.last_token_s = now
        request.preemptions += 1
        self.counters.preemptions += 1
        self.waiting[request.priority if self.priority_scheduling else 0].appendleft(request)
        self.n_waiting += 1

    def _unschedule(self, request: LiveRequest) -> int:
        """Take a running sequence out at a boundary, freeing its KV tokens and its chunk if
        one was scheduled; returns the tokens it had emitted."""
        del self.running[request.priority if self.priority_scheduling else 0][request]
        self.n_running -= 1
        if request is self._partial:
            emitted = request.generated  # its prompt was never finished
        else:
            emitted = request.output_tokens - (request.finish_iter - self.iteration)
        if self._chunks or self._prefilling or request is self._partial:
            self._drop_from_head(request)
        self.context_tokens -= request.prompt_tokens + emitted
        request.running_on = None
        return emitted

    def unschedule_aborted(self, request: LiveRequest) -> None:
        """Forget an aborted sequence at a boundary (running) or at once (waiting): its KV is
        freed and its emitted tokens are lost, so a resend starts from its prompt."""
        if request.running_on is self:
            self._unschedule(request)
        else:
            self.waiting[request.priority if self.priority_scheduling else 0].remove(request)
            self.n_waiting -= 1
        request.generated = 0

    def _admit(self, now: float, room: int) -> int:
        """Admit from the queue head while it fits; with `preempt_for_priority` (and priority
        scheduling) an interactive head that does not fit evicts batch sequences, most recent
        first, until it does, so that no later boundary of the segment could admit more.
        `room` is the token budget left for prompts (chunked prefill), or -1 for whole prompts
        without a budget; returns what is left of it."""
        waiting, running, finish = self.waiting, self.running, self._finish
        capacity, cap = self.kv_capacity_tokens, self.max_num_seqs
        priority_scheduling, evicts = self.priority_scheduling, self._evicts
        iteration = self.iteration
        while True:
            queue = waiting[0] or waiting[1]
            if not queue:
                return room
            request = queue[0]
            tokens = request.prompt_tokens + request.generated
            seqs = self.n_running
            if seqs >= cap or self.context_tokens + seqs + tokens + 1 > capacity:
                if not (evicts and request.is_interactive and running[1]):
                    return room  # head-of-line blocking, as vLLM 0.32 at the cap
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

    def take_waiting(self) -> list[LiveRequest]:
        """Remove and return the waiting requests (they never started here or were preempted)."""
        taken = [*self.waiting[0], *self.waiting[1]]
        self.waiting[0].clear()
        self.waiting[1].clear()
        self.n_waiting = 0
        return taken
