"""The iteration clock of one pod: how long its iterations last and what they produce.

Between two boundaries at which the scheduler acts, a pod runs one *segment*: an optional
prefill iteration (when it admitted requests) followed by `steps` decode iterations of a fixed
batch. A prefill iteration lasts one decode step of the sequences already running plus the
prefill of every admitted prompt, and ends with the admitted sequences' first tokens. Decode
step i of the segment lasts a + b*B + c*(C0 + i*B) ms for B sequences holding C0 KV tokens at
the start (each step adds B tokens), so the first k steps last the arithmetic series
k*(a + b*B + c*C0) + c*B*k*(k-1)/2 ms and the number of whole steps done by a time is the floor
of a quadratic's root. Event times and step counts both use `_decode_s`, so they never disagree
by rounding.

Tokens, KV usage and the ITL histogram are accounted lazily, up to a time (`advance_to`) or to
the segment's end, in O(histogram buckets spanned) whatever the number of steps: a
sequence's progress is implicit in the pod's iteration counter (it finishes at iteration
`finish_iter`), so no per-sequence work is done per step.
"""

from __future__ import annotations

import math

from chiron_operator.sim.latency import LatencyModel
from chiron_operator.sim.live import LiveRequest
from chiron_operator.sim.podmetrics import PodCounters


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
        "_pa",
        "_pb",
        "_pc",
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
        self.counters = PodCounters()
        self.n_running = 0
        self.context_tokens = 0
        self.iteration = 0
        self._prefilling: list[LiveRequest] = []
        self._head = self._head_seqs = 0
        self._seg_it0 = self._seg_len = self._seg_c0 = 0
        self._seg_t0 = self._dec_t0 = 0.0
        self._step_s = self._growth_s = 0.0

    def _plan_segment(self, now: float) -> tuple[int, int]:
        """Time the prefill head (if requests were admitted) and set the decode batch.

        Returns (head iterations, context tokens once the head is done).
        """
        admitted = self._prefilling
        seqs, context = self.n_running, self.context_tokens
        head_ms = 0.0
        head = 1 if admitted else 0
        if head:
            pa, pb, pc = self._pa, self._pb, self._pc
            admitted_tokens = 0
            for request in admitted:
                tokens = request.prompt_tokens + request.generated
                admitted_tokens += tokens
                head_ms += pa + pb * tokens + pc * tokens * tokens
            decode_seqs = seqs - len(admitted)
            if decode_seqs:
                head_ms += (
                    self._da + self._db * decode_seqs + self._dc * (context - admitted_tokens)
                )
            self._head_seqs = decode_seqs
            context += seqs
            head_ms = max(head_ms, 0.0)  # fits with a negative intercept, on tiny prompts
        self._head = head
        self._seg_t0, self._seg_it0, self._seg_c0 = now, self.iteration, context
        self._dec_t0 = now + head_ms / 1000.0
        self._step_s = (self._da + self._db * seqs + self._dc * context) / 1000.0
        self._growth_s = self._dc * seqs / 1000.0
        return head, context

    def _decode_s(self, steps: int) -> float:
        """Duration of the segment's first `steps` decode steps."""
        return steps * self._step_s + self._growth_s * (steps * (steps - 1) // 2)

    def _time_at(self, upto: int) -> float:
        """When iteration `upto` of the segment (counting the prefill head) ends."""
        if upto == 0:
            return self._seg_t0
        return self._dec_t0 + self._decode_s(upto - self._head)

    def _iterations_done(self, now: float) -> int:
        """Whole iterations of the segment finished by `now`."""
        t0 = self._dec_t0
        if now < t0:
            return 0
        head = self._head
        length = self._seg_len - head
        step, growth = self._step_s, self._growth_s
        # k*step + growth*k*(k-1)/2 <= now - t0, solved for k.
        half = 0.5 * growth
        if half > 0.0:
            linear = step - half
            k = int((-linear + math.sqrt(linear * linear + 4.0 * half * (now - t0))) / (2.0 * half))
        else:
            k = int((now - t0) // step)
        k = length if k > length else k if k > 0 else 0
        # The root is rounded; settle it against the expression event times use (_decode_s,
        # inlined because this runs on nearly every arrival).
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
        if self._head and done == 0:
            self._end_prefill(self._dec_t0)
            done = 1
        steps = upto - done
        if steps > 0:
            seqs = self.n_running
            counters = self.counters
            counters.generation_tokens += steps * seqs
            growth = self._growth_s
            first_s = self._step_s + growth * (done - self._head)
            counters.observe_itl_run(first_s, growth, steps, seqs)
            self.iteration += steps
            self.context_tokens += steps * seqs

    def _end_prefill(self, end_s: float) -> None:
        counters = self.counters
        decode_seqs = self._head_seqs
        admitted = self._prefilling
        counters.generation_tokens += decode_seqs + len(admitted)
        if decode_seqs:
            counters.observe_itl(end_s - self._seg_t0, decode_seqs)
        for request in admitted:
            counters.prompt_tokens += request.prompt_tokens + request.generated
            if request.generated == 0:
                request.first_token_s = end_s
                counters.observe_ttft(end_s - request.pod_dispatch_s)
            else:
                counters.observe_itl(end_s - request.last_token_s, 1)
        self.iteration += 1
        self.context_tokens += decode_seqs + len(admitted)
        self._prefilling = []
