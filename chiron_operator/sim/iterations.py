"""The iteration clock of one pod: how long its iterations last and what they produce.

Between two boundaries at which the scheduler acts, a pod runs one *segment*: an optional
prefill iteration (the *head*, when the scheduler gave prompt tokens to some sequences) followed
by `steps` iterations of a fixed batch. The head lasts one decode step of the sequences that
decode in it plus the cost of its prompt tokens (see `LatencyModel.prefill_chunk_s`), and ends
with the first token of every sequence whose prompt it finished. The following steps each give
one token to the `seqs` decoding sequences and, while a chunked prompt is still being
prefilled, `chunk` more of its prompt tokens. Step i of the segment lasts step + i*growth ms:
the decode term grows by c*seqs (each step adds seqs KV tokens) and a chunk [s, s+L) costs
b*L + c_p*(2*s*L + L^2), which grows by 2*c_p*L^2 per step. So the first k steps last the
arithmetic series k*step + growth*k*(k-1)/2 and the number of whole steps done by a time is the
floor of a quadratic's root. Event times and step counts use the same arithmetic, so they never
disagree by rounding.

Tokens, KV usage and the ITL histogram are accounted lazily, up to a time (`advance_to`) or to
the segment's end, in O(histogram buckets spanned) whatever the number of steps: a sequence's
progress is implicit in the pod's iteration counter (it finishes at iteration `finish_iter`), so
no per-sequence work is done per step.
"""

from __future__ import annotations

from bisect import bisect_left
from heapq import heappush
from math import sqrt as _sqrt

from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.podmetrics import ITL_BUCKETS_S, TTFT_BUCKETS_S, PodCounters

# Within this many steps of a whole number, `_iterations_done` checks its count with the exact
# arithmetic of event times; farther away, rounding cannot move it across a step.
_NEAR_WHOLE = 1e-4
_ITL_INF_SLOT = len(ITL_BUCKETS_S)

Chunk = tuple[LiveRequest, int, int, int]
"""(request, first prompt token, end token, prompt tokens in all) scheduled in a head."""


class IterationClock:
    """Segment timing and lazy accounting; `Instance` adds the scheduler and the lifecycle.

    Invariant between boundaries: `context_tokens` counts prompt + emitted tokens of every
    running sequence as of `iteration`, the number of iterations accounted so far. A sequence's
    whole prompt is counted from its admission, also while it is prefilled in chunks.

    `_budget` is vLLM's max_num_batched_tokens with chunked prefill, 0 without (whole prompts in
    one head, each charged `LatencyModel.prefill_s`, the simulator's original behaviour).
    `_partial` is the sequence whose prompt continues past the current head, if any (at most
    one: a prompt is cut only when it exhausts the budget, after which nothing else is admitted);
    `_partial_done` counts its prompt tokens computed so far.
    """

    __slots__ = (
        "_budget",
        "_chunks",
        "_da",
        "_db",
        "_dc",
        "_dec_t0",
        "_finish",
        "_growth_s",
        "_head",
        "_head_reserved",
        "_head_seqs",
        "_idle",
        "_pa",
        "_partial",
        "_partial_done",
        "_partial_total",
        "_pb",
        "_pc",
        "_pf",
        "_prefill_ms",
        "_prefill_tokens",
        "_prefilling",
        "_seg_c0",
        "_seg_chunk",
        "_seg_it0",
        "_seg_len",
        "_seg_seqs",
        "_seg_t0",
        "_step_s",
        "context_tokens",
        "counters",
        "iteration",
        "kv_capacity_tokens",
        "n_running",
    )

    def __init__(self, latency: LatencyModel, max_num_batched_tokens: int) -> None:
        self.kv_capacity_tokens = latency.kv_capacity_tokens
        self._budget = max_num_batched_tokens
        self._da = latency.decode_a_ms
        self._db = latency.decode_b_ms_per_seq
        self._dc = latency.decode_c_ms_per_token
        self._pa = latency.prefill_a_ms
        self._pb = latency.prefill_b_ms_per_token
        self._pc = latency.prefill_c_ms_per_token2
        self._pf = latency.prefill_floor_ms
        self.counters = PodCounters()
        self.n_running = 0
        self.context_tokens = 0
        self.iteration = 0
        self._prefilling: list[LiveRequest] = []
        self._chunks: list[Chunk] = []
        # (iteration at which it finishes, admission serial, sequence) of running sequences
        # whose prompt is done; stale entries (preempted, aborted) are skipped when popped.
        self._finish: list[tuple[int, int, LiveRequest]] = []
        self._prefill_ms = 0.0
        self._prefill_tokens = self._head_reserved = 0
        self._partial: LiveRequest | None = None
        self._partial_done = self._partial_total = 0
        self._idle = True
        self._head = self._head_seqs = 0
        self._seg_it0 = self._seg_len = self._seg_c0 = self._seg_seqs = self._seg_chunk = 0
        self._seg_t0 = self._dec_t0 = 0.0
        self._step_s = self._growth_s = 0.0

    def _begin_segment(self, now: float, finish_iter: int, single: bool) -> float:
        """Start a segment at boundary `now` and return when it ends: a head if prompt tokens
        were scheduled, then steps of the fixed batch up to iteration `finish_iter` (the first
        completion), the last step the KV cache can hold or the step before a chunked prompt's
        last chunk, or only one iteration if `single`."""
        seqs, context, iteration = self.n_running, self.context_tokens, self.iteration
        partial = self._partial is not None
        chunks = self._chunks
        if chunks or self._prefilling:
            # The head: the scheduled prompt tokens plus one decode step of the sequences that
            # were already decoding (see `LatencyModel.prefill_chunk_s` for how chunks and the
            # floor are charged: a prefill-only forward pass still reads every weight), never
            # negative, even for a model shifted by a negative step overhead.
            if chunks:
                head_ms, reserved = self._prefill_ms, self._head_reserved
                decode_seqs = seqs - len(chunks)
                if not decode_seqs and head_ms < self._pf:
                    head_ms = self._pf
            else:
                head_ms, reserved = self._prefill_ms, self._prefill_tokens
                decode_seqs = seqs - len(self._prefilling)
            if decode_seqs:
                head_ms += self._da + self._db * decode_seqs + self._dc * (context - reserved)
            self._head_seqs = decode_seqs
            head = 1
            dec_t0 = now + (head_ms if head_ms > 0.0 else 0.0) / 1000.0
            context += seqs - partial  # first tokens, and the decoders' tokens
        else:
            head = 0
            dec_t0 = now
        seqs -= partial
        steps = finish_iter - iteration - head
        if partial:
            step_s, growth_s, chunk, steps = self._chunk_series(seqs, context, steps)
        else:
            dc = self._dc
            step_s = (self._da + self._db * seqs + dc * context) / 1000.0
            growth_s = dc * seqs / 1000.0
            chunk = 0
        if seqs:
            # min() spelled out: this runs at nearly every boundary.
            room = (self.kv_capacity_tokens - context - partial) // seqs
            steps = room if room < steps else steps
        if single and 1 - head < steps:
            steps = 1 - head
        self._head, self._seg_len, self._idle = head, head + steps, False
        self._seg_t0, self._seg_it0, self._seg_c0 = now, iteration, context
        self._seg_seqs, self._seg_chunk = seqs, chunk
        self._dec_t0, self._step_s, self._growth_s = dec_t0, step_s, growth_s
        return dec_t0 + (steps * step_s + growth_s * (steps * (steps - 1) // 2))

    def _chunk_series(self, seqs: int, context: int, steps: int) -> tuple[float, float, int, int]:
        """(first step s, growth s, chunk tokens, steps) of at most `steps` steps that decode
        `seqs` sequences and give the rest of the budget to the partial prompt, up to the step
        before its last chunk (which admits with what it leaves); chunk 0 and no steps if the
        series cannot be summed (a prefill-only step on the roofline's floor, which is not
        arithmetic)."""
        chunk = self._budget - seqs
        start = self._partial_done
        pc = self._pc
        step_ms = self._pb * chunk + pc * chunk * (2 * start + chunk)
        growth_ms = 2.0 * pc * chunk * chunk
        if seqs:
            dc = self._dc
            decode_context = context - self._partial_total
            step_ms += self._da + self._db * seqs + dc * decode_context
            growth_ms += dc * seqs
        elif step_ms < self._pf:
            return 0.0, 0.0, 0, min(steps, 0)
        left = (self._partial_total - start - 1) // chunk
        return step_ms / 1000.0, growth_ms / 1000.0, chunk, left if left < steps else steps

    def _queue_prefill(self, request: LiveRequest, tokens: int) -> None:
        """Unchunked: add an admitted prompt of `tokens` tokens (prompt + tokens to recompute)
        to the head, charged `LatencyModel.prefill_s` (summed in admission order)."""
        self._prefilling.append(request)
        self._prefill_tokens += tokens
        prefill_ms = self._pa + self._pb * tokens + self._pc * tokens * tokens
        pf = self._pf
        self._prefill_ms += prefill_ms if prefill_ms > pf else pf

    def _queue_chunk(self, request: LiveRequest, start: int, end: int, total: int) -> None:
        """Chunked: prompt tokens [start, end) of `request` (of `total`) run in the head,
        charged `LatencyModel.prefill_chunk_s` (inlined; summed in scheduling order)."""
        self._chunks.append((request, start, end, total))
        prefill_ms = self._prefill_ms + (
            (self._pa if start == 0 else 0.0) + self._pb * (end - start)
        )
        self._prefill_ms = prefill_ms + self._pc * (end * end - start * start)
        self._prefill_tokens += end - start
        self._head_reserved += total
        if end == total:
            self._prefilling.append(request)
            if request is self._partial:
                self._partial = None
        else:
            self._partial = request
            self._partial_done, self._partial_total = end, total

    def _next_chunk(self, partial: LiveRequest, room: int) -> int:
        """Chunked: the cut prompt's next chunk, what `room` allows; returns the budget left."""
        start, total = self._partial_done, self._partial_total
        end = start + room if start + room < total else total
        self._queue_chunk(partial, start, end, total)
        if end == total:
            # From now on it finishes like a decode.
            finish_iter = self.iteration + partial.output_tokens - partial.generated
            partial.finish_iter = finish_iter
            heappush(self._finish, (finish_iter, partial.admit_serial, partial))
        return room - (end - start)

    def _cut_prompt(self, request: LiveRequest, tokens: int, room: int) -> None:
        """Chunked: the first `room` tokens of an admitted prompt of `tokens` run in the head;
        the rest continues at the next steps. `_queue_chunk` of [0, room), inlined."""
        self._chunks.append((request, 0, room, tokens))
        prefill_ms = self._prefill_ms + (self._pa + self._pb * room)
        self._prefill_ms = prefill_ms + self._pc * (room * room)
        self._prefill_tokens += room
        self._head_reserved += tokens
        self._partial = request
        self._partial_done, self._partial_total = room, tokens

    def _whole_prompt(self, request: LiveRequest, tokens: int, room: int) -> int:
        """Chunked: a whole admitted prompt runs in the head, within `room`; returns the budget
        left. `_queue_chunk` of [0, tokens), inlined (nearly every admission)."""
        self._chunks.append((request, 0, tokens, tokens))
        self._prefilling.append(request)
        prefill_ms = self._prefill_ms + (self._pa + self._pb * tokens)
        self._prefill_ms = prefill_ms + self._pc * (tokens * tokens)
        self._prefill_tokens += tokens
        self._head_reserved += tokens
        return room - tokens

    def _drop_from_head(self, request: LiveRequest) -> None:
        """Unschedule a sequence preempted or aborted at this boundary (its prompt, or its
        chunk, does not run)."""
        if request is self._partial:
            self._partial = None
        if self._chunks:
            kept = [c for c in self._chunks if c[0] is not request]
            partial = self._partial
            self._clear_prefill()
            for chunk in kept:
                self._queue_chunk(*chunk)
            self._partial = partial  # queueing a finishing chunk of it again must not clear it
        elif request in self._prefilling:
            # Unchunked: the others' whole prompts, charged again in admission order.
            others = [r for r in self._prefilling if r is not request]
            self._clear_prefill()
            for other in others:
                self._queue_prefill(other, other.prompt_tokens + other.generated)

    def _time_at(self, upto: int) -> float:
        """When iteration `upto` of the segment (counting the head) ends."""
        if upto == 0:
            return self._seg_t0
        steps = upto - self._head
        return self._dec_t0 + (steps * self._step_s + self._growth_s * (steps * (steps - 1) // 2))

    def _iterations_done(self, now: float) -> int:
        """Whole iterations of the segment finished by `now`."""
        t0 = self._dec_t0
        if now < t0:
            return 0
        head = self._head
        length = self._seg_len - head
        step, growth = self._step_s, self._growth_s
        # k*step + growth*k*(k-1)/2 = now - t0, solved for real k in the form that does not
        # cancel (step > growth/2: every sequence holds at least one KV token and a chunk
        # starts after the head's tokens).
        elapsed = now - t0
        half = 0.5 * growth
        linear = step - half
        root = 2.0 * elapsed / (linear + _sqrt(linear * linear + 4.0 * half * elapsed))
        k = int(root)
        if 0 < k < length and _NEAR_WHOLE < root - k < 1.0 - _NEAR_WHOLE:
            # The root's rounding error (a few ulps) and event times' are far below
            # _NEAR_WHOLE steps, so its floor is the count `_time_at` agrees with.
            return head + k
        k = length if k > length else k if k > 0 else 0
        # Near a whole step, settle the count against the arithmetic event times use.
        while k < length and t0 + ((k + 1) * step + growth * ((k + 1) * k // 2)) <= now:
            k += 1
        while k > 0 and t0 + (k * step + growth * (k * (k - 1) // 2)) > now:
            k -= 1
        return head + k

    def _account(self, upto: int) -> None:
        """Account the segment's iterations up to index `upto` (tokens, ITL gaps, KV)."""
        done = self.iteration - self._seg_it0
        if upto <= done:
            return
        head = self._head
        if head and not done:
            self._end_prefill(self._dec_t0)
            done = 1
        steps = upto - done
        if steps > 0:
            seqs = self._seg_seqs
            counters = self.counters
            counters.generation_tokens += steps * seqs
            if seqs:
                growth = self._growth_s
                first_s = self._step_s + growth * (done - head)
                # `PodCounters.observe_itl_run`'s common case, inlined (nearly every boundary):
                # every step in the first step's bucket.
                low = bisect_left(ITL_BUCKETS_S, first_s)
                if low == _ITL_INF_SLOT or first_s + growth * (steps - 1) <= ITL_BUCKETS_S[low]:
                    counters.itl_buckets[low] += steps * seqs
                else:
                    counters.observe_itl_run(first_s, growth, steps, seqs)
            self.iteration += steps
            self.context_tokens += steps * seqs
            chunk = self._seg_chunk
            if chunk:
                self._partial_done += steps * chunk
                counters.prompt_tokens += steps * chunk

    def _end_prefill(self, end_s: float) -> None:
        counters = self.counters
        decode_seqs = self._head_seqs
        admitted = self._prefilling
        emitted = decode_seqs + len(admitted)
        counters.generation_tokens += emitted
        # `PodCounters.observe_ttft` and `observe_itl`, inlined: once per head and request.
        itl_buckets = counters.itl_buckets
        if decode_seqs:
            itl_buckets[bisect_left(ITL_BUCKETS_S, end_s - self._seg_t0)] += decode_seqs
        ttft_buckets = counters.ttft_buckets
        for request in admitted:
            if request.generated == 0:
                request.first_token_s = end_s
                ttft_buckets[bisect_left(TTFT_BUCKETS_S, end_s - request.pod_dispatch_s)] += 1
            else:
                itl_buckets[bisect_left(ITL_BUCKETS_S, end_s - request.last_token_s)] += 1
        counters.prompt_tokens += self._prefill_tokens
        self.iteration += 1
        self.context_tokens += emitted
        # `_clear_prefill`, inlined: once per head.
        self._prefilling = []
        self._chunks = []
        self._prefill_ms = 0.0
        self._prefill_tokens = self._head_reserved = 0

    def _clear_prefill(self) -> None:
        self._prefilling = []
        self._chunks = []
        self._prefill_ms = 0.0
        self._prefill_tokens = self._head_reserved = 0
