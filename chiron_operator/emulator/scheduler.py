"""vLLM V1-like scheduling for one emulated engine: admission, KV blocks and preemption.

Pure bookkeeping with no clock and no I/O, so every rule can be tested step by step. At each
iteration boundary `schedule` returns the iteration's work:

- the running sequences each need KV room for one more token. While the blocks do not fit, the
  scheduler preempts a victim (FCFS: the most recently admitted; priority: the worst priority,
  latest arrival among equals). vLLM preempts by recompute: the victim returns to the front of
  the waiting queue, keeps its emitted tokens and later prefills prompt + emitted tokens again.
  As in vLLM, nothing is admitted at a boundary where this happened;
- the step's token budget (`max_num_batched_tokens`) goes first to one token per decoding
  sequence, then to the rest of any prompt cut at an earlier step (chunked prefill, which vLLM
  V1 always runs: see `chiron_operator.perfmodel.vllm_defaults`);
- otherwise waiting requests are admitted in order (FCFS: arrival, preempted first; priority:
  lower value first, then arrival) while a slot is free (running < `max_num_seqs`), their KV
  blocks fit and the token budget lasts, with head-of-line blocking; the last one admitted may
  get only what is left of the budget, its prompt continuing at the next steps. A waiting
  request never evicts running work, whatever its priority: vLLM 0.32's V1 scheduler stops its
  waiting loop at the cap or when the blocks do not fit (upstream issue 40004), so under the
  priority policy an urgent request waits for a running one to finish, and only the KV growth
  above preempts. `preempt_for_priority` models builds with the upstream fix: a head that does
  not fit then evicts running sequences of strictly worse priority (victims chosen as above)
  until it fits, and is admitted.

A sequence holds KV blocks for prompt + emitted + 1 tokens while it runs (the +1 is the token
the current iteration produces), its whole prompt from its admission on (vLLM allocates chunk by
chunk; the simulator holds them early too). `complete` then gives its token to every scheduled
sequence that decoded or finished its prompt; a step prices its chunks as the simulator does
(`LatencyModel.prefill_chunk_s`, the floor only when nothing decodes).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from enum import Enum, StrEnum

from chiron_operator.perfmodel.latency import LatencyModel


class Policy(StrEnum):
    """vLLM's `--scheduling-policy` values."""

    FCFS = "fcfs"
    PRIORITY = "priority"


class SeqState(Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(eq=False, slots=True)
class Sequence:
    """One request as the scheduler sees it (identity equality: one object per request)."""

    request_id: str
    prompt_tokens: int
    max_tokens: int
    priority: int = 0
    serial: int = 0
    generated: int = 0
    held_blocks: int = 0
    preemptions: int = 0
    state: SeqState = SeqState.WAITING
    computed: int = 0
    prefilling: bool = False

    @property
    def context_tokens(self) -> int:
        """Prompt plus emitted tokens: what a (re)admission prefills and what decode attends."""
        return self.prompt_tokens + self.generated


@dataclass(frozen=True, slots=True)
class Step:
    """The work of one iteration, with the token counts fixed when it was scheduled."""

    decodes: tuple[Sequence, ...]
    prefills: tuple[Sequence, ...]
    preempted: tuple[Sequence, ...]
    prefill_lengths: tuple[int, ...]
    decode_context_tokens: int
    prefill_starts: tuple[int, ...] = ()
    completing: tuple[Sequence, ...] = ()

    @property
    def scheduled(self) -> tuple[Sequence, ...]:
        """Every sequence the iteration works on (decodes and prompt chunks)."""
        return self.decodes + self.prefills

    @property
    def num_tokens(self) -> int:
        """Tokens the iteration processes: prompt chunks plus one per decode."""
        return sum(self.prefill_lengths) + len(self.decodes)

    def duration_s(self, model: LatencyModel) -> float:
        """Modelled iteration time: the batch's decode step plus each prompt chunk."""
        prefill = sum(
            model.prefill_chunk_s(start, start + n)
            for start, n in zip(self.prefill_starts, self.prefill_lengths, strict=True)
        )
        if not self.decodes:
            # A forward pass that only prefills still reads every weight.
            return max(prefill, model.prefill_floor_ms / 1000.0)
        return model.decode_step_s(len(self.decodes), self.decode_context_tokens) + prefill


class WaitQueue:
    """Waiting sequences in admission order; aborted entries are dropped lazily."""

    def __init__(self, policy: Policy) -> None:
        self._by_priority = policy is Policy.PRIORITY
        self._heap: list[tuple[int, int, Sequence]] = []
        self._fifo: deque[Sequence] = deque()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, seq: Sequence, *, front: bool = False) -> None:
        """Queue `seq`; `front` (a preempted sequence under FCFS) puts it first, as vLLM does."""
        self._len += 1
        if self._by_priority:
            # A preempted sequence keeps its arrival serial, so it regains its old place.
            heapq.heappush(self._heap, (seq.priority, seq.serial, seq))
        elif front:
            self._fifo.appendleft(seq)
        else:
            self._fifo.append(seq)

    def peek(self) -> Sequence | None:
        """The next sequence to admit, if any."""
        while True:
            if self._by_priority:
                head = self._heap[0][2] if self._heap else None
            else:
                head = self._fifo[0] if self._fifo else None
            if head is None or head.state is SeqState.WAITING:
                return head
            self._drop_head()

    def pop(self) -> Sequence:
        """Remove and return the head (call after `peek` returned it)."""
        head = self.peek()
        if head is None:
            raise IndexError("pop from an empty wait queue")
        self._drop_head()
        self._len -= 1
        return head

    def discard(self, seq: Sequence) -> None:
        """Forget `seq`, whose state the caller has already moved out of WAITING."""
        self._len -= 1

    def _drop_head(self) -> None:
        if self._by_priority:
            heapq.heappop(self._heap)
        else:
            self._fifo.popleft()


class Scheduler:
    """Admission, KV-block accounting and preemption of one engine.

    `preempt_for_priority` (priority policy only) lets a waiting head evict running sequences of
    strictly worse priority, as vLLM builds with the fix for upstream issue 40004 do.
    """

    def __init__(
        self,
        *,
        max_num_seqs: int,
        kv_blocks: int,
        block_size: int,
        policy: Policy,
        max_num_batched_tokens: int,
        preempt_for_priority: bool = False,
    ) -> None:
        self.max_num_seqs = max_num_seqs
        self.kv_blocks = kv_blocks
        self.block_size = block_size
        self.policy = policy
        self.max_num_batched_tokens = max_num_batched_tokens
        self.preempt_for_priority = preempt_for_priority
        self.used_blocks = 0
        self.num_preemptions = 0
        self._running: list[Sequence] = []
        self._waiting = WaitQueue(policy)
        self._serial = 0

    @property
    def num_running(self) -> int:
        """Sequences in the batch."""
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        """Sequences queued, preempted ones included."""
        return len(self._waiting)

    @property
    def kv_usage(self) -> float:
        """Share of KV blocks in use, 0-1 (vLLM's kv_cache_usage_perc)."""
        return self.used_blocks / self.kv_blocks

    @property
    def has_work(self) -> bool:
        """True while anything runs or waits."""
        return bool(self._running) or len(self._waiting) > 0

    def blocks_for(self, tokens: int) -> int:
        """KV blocks that hold `tokens` tokens."""
        return -(-tokens // self.block_size)

    def add(self, seq: Sequence) -> None:
        """Queue a new request."""
        self._serial += 1
        seq.serial = self._serial
        seq.state = SeqState.WAITING
        self._waiting.push(seq)

    def abort(self, seq: Sequence) -> bool:
        """Drop `seq` wherever it is; False when it had already finished or been aborted."""
        if seq.state is SeqState.WAITING:
            seq.state = SeqState.ABORTED
            self._waiting.discard(seq)
            return True
        if seq.state is SeqState.RUNNING:
            self._release(seq, SeqState.ABORTED)
            return True
        return False

    def schedule(self) -> Step:
        """Plan the next iteration (see the module docstring for the rules)."""
        preempted: list[Sequence] = []
        self._grow_running(preempted)
        # As in vLLM, every decode uses one token of the iteration's budget.
        budget = self.max_num_batched_tokens - sum(not s.prefilling for s in self._running)
        chunks: list[tuple[Sequence, int]] = []
        for seq in self._running:
            if seq.prefilling and budget > 0:
                budget -= self._chunk(seq, budget, chunks)
        if not preempted:
            self._admit(preempted, budget, chunks)
            # With preempt_for_priority an eviction may take back a chunk scheduled above.
            chunks = [c for c in chunks if c[0].state is SeqState.RUNNING]
        chunked = {c[0] for c in chunks}
        decodes = tuple(s for s in self._running if not s.prefilling and s not in chunked)
        return Step(
            decodes=decodes,
            prefills=tuple(c[0] for c in chunks),
            preempted=tuple(preempted),
            prefill_lengths=tuple(c[0].computed - c[1] for c in chunks),
            decode_context_tokens=sum(s.context_tokens for s in decodes),
            prefill_starts=tuple(c[1] for c in chunks),
            completing=tuple(c[0] for c in chunks if not c[0].prefilling),
        )

    def _chunk(self, seq: Sequence, budget: int, chunks: list[tuple[Sequence, int]]) -> int:
        """Schedule the next chunk of `seq`'s prompt within `budget`; returns its tokens."""
        start = seq.computed
        tokens = min(seq.context_tokens - start, budget)
        seq.computed = start + tokens
        seq.prefilling = seq.computed < seq.context_tokens
        chunks.append((seq, start))
        return tokens

    def complete(self, step: Step) -> list[Sequence]:
        """Give each scheduled sequence still running its token; returns those sequences.

        Sequences that reach max_tokens are FINISHED and release their blocks.
        """
        emitted: list[Sequence] = []
        for seq in step.decodes + step.completing:
            if seq.state is not SeqState.RUNNING:
                continue
            seq.generated += 1
            emitted.append(seq)
            if seq.generated >= seq.max_tokens:
                self._release(seq, SeqState.FINISHED)
        return emitted

    def _grow_running(self, preempted: list[Sequence]) -> None:
        while self._running and self._growth_blocks() > self.kv_blocks - self.used_blocks:
            self._preempt(self._victim(), preempted)
        for seq in self._running:
            self._hold(seq, self.blocks_for(seq.context_tokens + 1))

    def _growth_blocks(self) -> int:
        return sum(
            max(0, self.blocks_for(s.context_tokens + 1) - s.held_blocks) for s in self._running
        )

    def _victim(self) -> Sequence:
        if self.policy is Policy.PRIORITY:
            return max(self._running, key=lambda s: (s.priority, s.serial))
        return self._running[-1]

    def _admit(
        self, preempted: list[Sequence], budget: int, chunks: list[tuple[Sequence, int]]
    ) -> None:
        while budget > 0 and (head := self._waiting.peek()) is not None:
            if not self._make_room(head, preempted):
                break
            self._waiting.pop()
            head.state = SeqState.RUNNING
            self._hold(head, self.blocks_for(head.context_tokens + 1))
            self._running.append(head)
            head.computed, head.prefilling = 0, True
            budget -= self._chunk(head, budget, chunks)

    def _make_room(self, head: Sequence, preempted: list[Sequence]) -> bool:
        need = self.blocks_for(head.context_tokens + 1)
        while len(self._running) >= self.max_num_seqs or need > self.kv_blocks - self.used_blocks:
            # vLLM 0.32 never evicts for a waiting request (issue 40004): only the fix does.
            evicts = self.preempt_for_priority and self.policy is Policy.PRIORITY
            if not evicts or not self._running:
                return False
            victim = self._victim()
            if victim.priority <= head.priority:
                return False
            self._preempt(victim, preempted)
        return True

    def _preempt(self, seq: Sequence, preempted: list[Sequence]) -> None:
        self._release(seq, SeqState.WAITING)
        seq.preemptions += 1
        self.num_preemptions += 1
        self._waiting.push(seq, front=True)
        preempted.append(seq)

    def _hold(self, seq: Sequence, blocks: int) -> None:
        self.used_blocks += blocks - seq.held_blocks
        seq.held_blocks = blocks

    def _release(self, seq: Sequence, state: SeqState) -> None:
        self._running.remove(seq)
        self.used_blocks -= seq.held_blocks
        seq.held_blocks = 0
        seq.state = state
        seq.computed, seq.prefilling = 0, False  # a preempted prompt is recomputed whole
