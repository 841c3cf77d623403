"""The iteration clock of one pod: how long its iterations last and what they produce.

Between two boundaries at which the scheduler acts, a pod runs one *segment*: an optional
prefill iteration (when it admitted requests) followed by `steps` decode iterations of a fixed
batch. A prefill iteration lasts one decode step of the sequences already running plus the
prefill of every admitted prompt, and ends with the admitted sequences' first tokens. Decode
step i of the segment lasts a + b*B + c*(C0 + i*B) ms for B sequences holding C0 KV tokens at
the start (each step adds B tokens), so the first k steps last the arithmetic series
k*(a + b*B + c*C0) + c*B*k*(k-1)/2 ms and the number of whole steps done by a time is the floor
of a quadratic's root. Event times and step counts use the same arithmetic, so they never
disagree by rounding.

Tokens, KV usage and the ITL histogram are accounted lazily, up to a time (`advance_to`) or to
the segment's end, in O(histogram buckets spanned) whatever the number of steps: a
sequence's progress is implicit in the pod's iteration counter (it finishes at iteration
`finish_iter`), so no per-sequence work is done per step.
"""

from __future__ import annotations

from math import sqrt as _sqrt

from chiron_operator.sim.latency import LatencyModel
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.podmetrics import PodCounters

# Within this many steps of a whole number, `_iterations_done` checks its count with the exact
# arithmetic of event times; farther away, rounding cannot move it across a step.
_NEAR_WHOLE = 1e-4


class IterationClock:
    """Segment timing and lazy accounting; `Instance` adds the scheduler and the lifecycle.

    Invariant between boundaries: `context_tokens` counts prompt + emitted tokens of every
    running sequence as of `iteration`, the number of iterations accounted so far.
    """

    __slots__ = (
        "_da",
        "_db",
        "_dc",
        "_dec_t0",
        "_growth_s",
        "_head",
        "_head_seqs",
        "_idle",
        "_pa",
        "_pb",
        "_pc",
        "_pf",
        "_prefill_ms",
        "_prefill_tokens",
        "_prefilling",
        "_seg_c0",
        "_seg_it0",
        "_seg_len",
        "_seg_t0",
        "_step_s",
        "context_tokens",
        "counters",
        "iteration",
        "kv_capacity_tokens",
        "n_running",
    )

    def __init__(self, latency: LatencyModel) -> None:
        self.kv_capacity_tokens = latency.kv_capacity_tokens
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
        self._prefill_ms = 0.0
        self._prefill_tokens = 0
        self._idle = True
        self._head = self._head_seqs = 0
        self._seg_it0 = self._seg_len = self._seg_c0 = 0
        self._seg_t0 = self._dec_t0 = 0.0
        self._step_s = self._growth_s = 0.0

    def _begin_segment(self, now: float, finish_iter: int, single: bool) -> float:
        """Start a segment at boundary `now` and return when it ends: a prefill head if requests
        were admitted, then decode steps of the fixed batch up to iteration `finish_iter` (the
        first completion) or the last step the KV cache can hold, or only one iteration if
        `single`."""
        seqs, context, iteration = self.n_running, self.context_tokens, self.iteration
        if self._prefilling:
            head = 1
            dec_t0 = now + self._head_ms(seqs, context) / 1000.0
            context += seqs
        else:
            head = 0
            dec_t0 = now
        dc = self._dc
        step_s = (self._da + self._db * seqs + dc * context) / 1000.0
        growth_s = dc * seqs / 1000.0
        steps = finish_iter - iteration - head
        room = (self.kv_capacity_tokens - context) // seqs
        # min() spelled out: this runs at nearly every boundary.
        steps = room if room < steps else steps
        if single and 1 - head < steps:
            steps = 1 - head
        self._head, self._seg_len, self._idle = head, head + steps, False
        self._seg_t0, self._seg_it0, self._seg_c0 = now, iteration, context
        self._dec_t0, self._step_s, self._growth_s = dec_t0, step_s, growth_s
        return dec_t0 + (steps * step_s + growth_s * (steps * (steps - 1) // 2))

    def _queue_prefill(self, request: LiveRequest, tokens: int) -> None:
        """Add an admitted prompt of `tokens` tokens (prompt + tokens to recompute) to the next
        prefill iteration, charged `LatencyModel.prefill_s` (summed in admission order)."""
        self._prefilling.append(request)
        self._prefill_tokens += tokens
        prefill_ms = self._pa + self._pb * tokens + self._pc * tokens * tokens
        pf = self._pf
        self._prefill_ms += prefill_ms if prefill_ms > pf else pf

    def _head_ms(self, seqs: int, context: int) -> float:
        """The prefill iteration: the admitted prompts' prefills plus one decode step of the
        sequences that were already running."""
        head_ms = self._prefill_ms
        decode_seqs = seqs - len(self._prefilling)
        if decode_seqs:
            head_ms += (
                self._da + self._db * decode_seqs + self._dc * (context - self._prefill_tokens)
            )
        self._head_seqs = decode_seqs
        # Never negative, even for a model shifted by a negative step overhead.
        return head_ms if head_ms > 0.0 else 0.0

    def _time_at(self, upto: int) -> float:
        """When iteration `upto` of the segment (counting the prefill head) ends."""
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
        # cancel (step > growth/2 since every sequence holds at least one KV token).
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
            seqs = self.n_running
            counters = self.counters
            counters.generation_tokens += steps * seqs
            growth = self._growth_s
            counters.observe_itl_run(self._step_s + growth * (done - head), growth, steps, seqs)
            self.iteration += steps
            self.context_tokens += steps * seqs

    def _end_prefill(self, end_s: float) -> None:
        counters = self.counters
        decode_seqs = self._head_seqs
        admitted = self._prefilling
        emitted = decode_seqs + len(admitted)
        counters.generation_tokens += emitted
        if decode_seqs:
            counters.observe_itl(end_s - self._seg_t0, decode_seqs)
        for request in admitted:
            if request.generated == 0:
                request.first_token_s = end_s
                counters.observe_ttft(end_s - request.pod_dispatch_s)
            else:
                counters.observe_itl(end_s - request.last_token_s, 1)
        counters.prompt_tokens += self._prefill_tokens
        self.iteration += 1
        self.context_tokens += emitted
        self._clear_prefill()

    def _clear_prefill(self) -> None:
        self._prefilling = []
        self._prefill_ms = 0.0
        self._prefill_tokens = 0
