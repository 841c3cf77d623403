"""vLLM V1's scheduling defaults that the simulated pods follow.

vLLM V1 always runs chunked prefill (`EngineArgs._set_default_args_v1`: "V1 always uses chunked
prefills"). Each engine step has a token budget, `max_num_batched_tokens`; the V1 scheduler
(`vllm/v1/core/sched/scheduler.py`, `Scheduler.schedule`) starts from
`token_budget = max_num_scheduled_tokens` and serves the RUNNING requests first, each taking
`min(tokens it still needs, token_budget)` (one for a decode, the rest of its prompt for a
partially prefilled one), then admits WAITING requests while budget is left, a prompt longer
than what is left being cut to it. A request's first token comes with its prompt's last chunk.

The budget's default depends on the GPU and the entry point (`EngineArgs.get_batch_defaults` in
`vllm/engine/arg_utils.py`): for the OpenAI-compatible server, 8192 tokens on GPUs with at least
70 GiB that are not A100s (H100, H200, MI300X: "For GPUs like H100 and MI300x, use larger default
values"), and 2048 elsewhere, A100s included ("Setting large `max_num_batched_tokens` for A100
reduces throughput, see PR #17885"). vLLM refuses a budget below `max_num_seqs`.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field

from chiron_operator.api.base import SpecModel

GIB: Final = 1024**3
LARGE_GPU_MAX_NUM_BATCHED_TOKENS: Final = 8192
DEFAULT_MAX_NUM_BATCHED_TOKENS: Final = 2048
LARGE_GPU_MIN_BYTES: Final = 70 * GIB


def default_max_num_batched_tokens(gpu_name: str, gpu_memory_bytes: int) -> int:
    """vLLM's OpenAI-server default token budget per step for this GPU."""
    if gpu_memory_bytes >= LARGE_GPU_MIN_BYTES and "a100" not in gpu_name.lower():
        return LARGE_GPU_MAX_NUM_BATCHED_TOKENS
    return DEFAULT_MAX_NUM_BATCHED_TOKENS


def profile_max_num_batched_tokens(profile_name: str) -> int:
    """The default budget on the GPU of latency profile `profile_name`."""
    # Imported here: profiles is a large module and this is called once per run.
    from chiron_operator.perfmodel.profiles import SPECS  # noqa: PLC0415

    for spec in SPECS:
        if spec.name == profile_name:
            return default_max_num_batched_tokens(spec.gpu.name, spec.gpu.memory_bytes)
    raise ValueError(f"unknown latency profile {profile_name!r}")


class EngineSpec(SpecModel):
    """vLLM engine settings every pod runs with, whatever the policy (see `vllm_defaults`)."""

    chunked_prefill: bool = Field(
        default=True,
        description="vLLM V1's chunked prefill (its default); false reproduces the original "
        "simulator (whole prompts in one step, no token budget).",
    )
    max_num_batched_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Token budget per step; default: vLLM's OpenAI-server default for the "
        "profile's GPU (8192 on H100, 2048 on A100).",
    )
    preempt_for_priority: bool = Field(
        default=False,
        description="Let a waiting interactive request evict running batch work on a mixed pod "
        "at the --max-num-seqs cap (a vLLM build with the fix for upstream issue 40004, as the "
        "emulator's --preempt-for-priority); false is vLLM 0.32, where only KV-cache pressure "
        "preempts.",
    )
