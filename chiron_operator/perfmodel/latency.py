"""Latency model of one vLLM instance under continuous batching.

decode step ms = a + b*batch_seqs + c*context_tokens (all sequences' KV tokens), and
prefill ms = max(floor, a + b*T + c*T^2) for T prompt tokens: a roofline. A forward pass reads
every weight once whatever the prompt, so short prompts are memory-bound and cost the floor;
long ones are compute-bound, linear in T (the GEMMs) plus quadratic (attention). Coefficients
are fitted to measured tables (see `calibration.py`); times are returned in seconds.

With chunked prefill (vLLM V1's default, see `sim.vllm_defaults`) a prompt runs in chunks, each
in one engine step alongside the running decodes. A chunk covering prompt tokens [s, e) costs
`prefill_chunk_s(s, e)` = a*[s == 0] + b*(e - s) + c*(e^2 - s^2): attention over the chunk's
queries reads the whole prefix (the c term integrates to e^2 - s^2), so the chunks of one prompt
sum exactly to the whole-prompt quadratic a + b*T + c*T^2, whatever the cut. `a` is a per-prompt
cost (the fit's intercept), paid once, with the first chunk. The floor is the memory-bound read
of every weight by a forward pass: a step that also decodes already pays it in the decode step
(decode a is about the same weight read: 10.9 vs 11.3 ms on the 8B A100 fit), so a step charges
it only when it carries prompt tokens and no decode, as max(floor, sum of its chunks). Without
chunking every prompt keeps its own max(floor, ...), the simulator's original charge.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Fitted step-time coefficients (milliseconds) and the KV capacity of one instance.

    `prefill_floor_ms` defaults to 0, i.e. no floor: a plain quadratic prefill.
    """

    name: str
    decode_a_ms: float
    decode_b_ms_per_seq: float
    decode_c_ms_per_token: float
    prefill_a_ms: float
    prefill_b_ms_per_token: float
    prefill_c_ms_per_token2: float
    kv_capacity_tokens: int
    prefill_floor_ms: float = 0.0

    def decode_step_s(self, batch_seqs: int, context_tokens: int) -> float:
        """One decode iteration for `batch_seqs` sequences holding `context_tokens` KV tokens."""
        ms = (
            self.decode_a_ms
            + self.decode_b_ms_per_seq * batch_seqs
            + self.decode_c_ms_per_token * context_tokens
        )
        return ms / 1000.0

    def prefill_s(self, tokens: int) -> float:
        """Prefill of one prompt (or chunk) of `tokens` tokens."""
        ms = (
            self.prefill_a_ms
            + self.prefill_b_ms_per_token * tokens
            + self.prefill_c_ms_per_token2 * tokens * tokens
        )
        return max(ms, self.prefill_floor_ms) / 1000.0

    def prefill_chunk_s(self, start_tokens: int, end_tokens: int) -> float:
        """Prompt tokens [start_tokens, end_tokens) of one prompt, as one chunk of a step that
        also decodes (no floor; see the module docstring). Sums over a prompt's chunks to the
        unfloored whole-prompt quadratic."""
        s, e = start_tokens, end_tokens
        ms = (self.prefill_a_ms if s == 0 else 0.0) + self.prefill_b_ms_per_token * (e - s)
        ms += self.prefill_c_ms_per_token2 * (e * e - s * s)
        return ms / 1000.0


def with_step_overhead(
    model: LatencyModel, overhead_ms: float, *, name: str | None = None
) -> LatencyModel:
    """`model` with `overhead_ms` added to every decode and prefill step.

    For sensitivity sweeps of the per-step CPU/small-kernel cost that kernel-sum calibrations
    miss (0.5-3 ms in real vLLM, see docs/LATENCY_MODEL.md). Negative values remove overhead.
    The overhead is paid on top of the prefill roofline, so it shifts both of its branches.
    """
    return replace(
        model,
        name=model.name if name is None else name,
        decode_a_ms=model.decode_a_ms + overhead_ms,
        prefill_a_ms=model.prefill_a_ms + overhead_ms,
        prefill_floor_ms=model.prefill_floor_ms + overhead_ms,
    )
