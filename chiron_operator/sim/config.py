"""The frozen configuration of one simulation run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

import numpy as np

from chiron_operator.core.enums import Role
from chiron_operator.core.tuning import SloTargets
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.perfmodel.vllm_defaults import DEFAULT_MAX_NUM_BATCHED_TOKENS
from chiron_operator.routing import DEADLINE_BUCKET_S, RoutingTuning
from chiron_operator.sim.router import RoutingMode


class StepMode(StrEnum):
    """FAST fast-forwards decode analytically between events; EXACT steps every iteration."""

    FAST = "fast"
    EXACT = "exact"


@runtime_checkable
class SupportsColdStart(Protocol):
    """Anything that draws a cold-start duration (a `ColdStartModel`, for one)."""

    def sample_s(self, rng: np.random.Generator) -> float: ...


ColdStart = float | Callable[[np.random.Generator], float] | SupportsColdStart
"""A fixed delay in seconds, a function of a Generator, or an object with `sample_s(rng)`."""


def cold_start_fn(cold_start: ColdStart) -> Callable[[np.random.Generator], float]:
    """Normalise any accepted cold-start form to a function of the Generator."""
    if isinstance(cold_start, SupportsColdStart):
        return cold_start.sample_s
    if callable(cold_start):
        return cold_start
    delay = float(cold_start)
    return lambda _rng: delay


def _default_replicas() -> dict[Role, int]:
    return {Role.INTERACTIVE: 1, Role.MIXED: 0, Role.BATCH: 0}


def _default_max_num_seqs() -> dict[Role, int]:
    return {Role.INTERACTIVE: 32, Role.MIXED: 64, Role.BATCH: 256}


@dataclass(frozen=True)
class SimConfig:
    """Everything a run depends on besides the workload and the policy.

    Times are seconds. Initial pods are ready at t=0 (a warm pool); pods added later pay the
    cold start. Each ready decision takes effect `actuation_delay_s` after its tick. The snapshot
    sees a pod's sample `scrape_delay_s` after the scrape; rates and quantiles span `window_s`.
    `expose_class_split` gives controllers the interactive/batch split of each pod's load,
    which real vLLM does not export. Every pod, whatever the policy, runs vLLM V1's chunked
    prefill with a step budget of `max_num_batched_tokens` (raised to the pod's max_num_seqs, as
    vLLM requires); `chunked_prefill=False` gives the original scheduler (whole prompts, no
    budget), to reproduce earlier results. `preempt_for_priority` gives every pod a vLLM that
    evicts running batch work for a waiting interactive request at the cap (the fix for
    upstream issue 40004; vLLM 0.32 does not). `routing` picks the router (`sim.router`):
    CHIRON runs the pool's gateway with `routing_tuning` (its `spec.gateway` tunables), SERVICES
    plain Services, UNIFORM the baselines' join-shortest-queue.
    """

    latency: LatencyModel
    cold_start: ColdStart
    horizon_s: float
    initial_replicas: Mapping[Role, int] = field(default_factory=_default_replicas)
    initial_max_num_seqs: Mapping[Role, int] = field(default_factory=_default_max_num_seqs)
    tensor_parallel_size: int = 1
    routing: RoutingMode = RoutingMode.CHIRON
    routing_tuning: RoutingTuning = field(default_factory=RoutingTuning)
    step_mode: StepMode = StepMode.FAST
    seed: int = 0
    slo: SloTargets = field(default_factory=SloTargets)
    control_interval_s: float = 30.0
    scrape_interval_s: float = 15.0
    scrape_delay_s: float = 5.0
    window_s: float = 60.0
    actuation_delay_s: float = 0.0
    drain_grace_s: float = 30.0
    deadline_bucket_s: float = DEADLINE_BUCKET_S
    expose_class_split: bool = False
    chunked_prefill: bool = True
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    preempt_for_priority: bool = False

    def __post_init__(self) -> None:
        positive = {
            "horizon_s": self.horizon_s,
            "control_interval_s": self.control_interval_s,
            "scrape_interval_s": self.scrape_interval_s,
            "window_s": self.window_s,
            "deadline_bucket_s": self.deadline_bucket_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name, value in {
            "scrape_delay_s": self.scrape_delay_s,
            "actuation_delay_s": self.actuation_delay_s,
            "drain_grace_s": self.drain_grace_s,
        }.items():
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        _check_latency(self.latency)
        counts = {
            "tensor_parallel_size": self.tensor_parallel_size,
            "max_num_batched_tokens": self.max_num_batched_tokens,
        }
        for name, count in counts.items():
            if count < 1:
                raise ValueError(f"{name} must be >= 1")
        if any(n < 0 for n in self.initial_replicas.values()):
            raise ValueError("initial_replicas must be >= 0")
        if any(n < 1 for n in self.initial_max_num_seqs.values()):
            raise ValueError("initial_max_num_seqs must be >= 1")


def _check_latency(latency: LatencyModel) -> None:
    decode = (latency.decode_a_ms, latency.decode_b_ms_per_seq, latency.decode_c_ms_per_token)
    if min(decode) < 0 or latency.decode_a_ms + latency.decode_b_ms_per_seq <= 0:
        # Fast-forwarding assumes decode steps that take time and never shrink as the
        # context grows.
        raise ValueError(f"latency model {latency.name!r} needs positive decode steps")
    if latency.kv_capacity_tokens < 2:
        raise ValueError("kv_capacity_tokens must be >= 2")
