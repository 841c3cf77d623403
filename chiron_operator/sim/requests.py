"""Requests as workloads describe them (inputs to the simulator, immutable)."""

from __future__ import annotations

from dataclasses import dataclass

from chiron_operator.core.enums import RequestClass


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload: when it arrives, its class, its lengths and its deadline.

    `deadline_s` is absolute on the simulation clock; None for interactive requests, whose
    SLOs are latency targets rather than deadlines.
    """

    request_id: int
    arrival_s: float
    request_class: RequestClass
    prompt_tokens: int
    output_tokens: int
    deadline_s: float | None = None
