"""The mutable state of one request while the simulation runs.

`RequestSpec` is the workload's immutable input; `LiveRequest` follows it through the router and
instances (dispatches, preemptions, re-queues) and becomes a `RequestRecord` at the end.
"""

from __future__ import annotations

import math

from chiron_operator.core.enums import RequestClass
from chiron_operator.sim.requests import RequestSpec

INTERACTIVE_PRIORITY = 0
BATCH_PRIORITY = 1
_INTERACTIVE_CLASS = RequestClass.INTERACTIVE
_NAN = math.nan


class LiveRequest:
    """One request in flight. Plain slotted class: the hot path touches these fields millions of
    times, and attribute access on a slotted class is the cheapest Python offers.

    `generated` is the number of output tokens emitted before the current run on an instance
    (non-zero after a preemption or an abort); on re-admission the instance recomputes the
    prompt plus these tokens, as vLLM's recompute preemption does.
    """

    __slots__ = (
        "admit_serial",
        "arrival_s",
        "completion_s",
        "deadline_s",
        "dispatch_s",
        "drop_reason",
        "finish_iter",
        "first_token_s",
        "generated",
        "is_interactive",
        "last_token_s",
        "output_tokens",
        "pod_dispatch_s",
        "preemptions",
        "priority",
        "prompt_tokens",
        "request_class",
        "request_id",
        "requeues",
        "running_on",
    )

    def __init__(self, spec: RequestSpec, default_deadline_s: float) -> None:
        self.request_id = spec.request_id
        self.request_class = request_class = spec.request_class
        self.is_interactive = interactive = request_class is _INTERACTIVE_CLASS
        self.priority = INTERACTIVE_PRIORITY if interactive else BATCH_PRIORITY
        self.arrival_s = spec.arrival_s
        self.prompt_tokens = spec.prompt_tokens
        self.output_tokens = spec.output_tokens
        if spec.deadline_s is not None:
            self.deadline_s = spec.deadline_s
        elif interactive:
            self.deadline_s = math.inf
        else:
            self.deadline_s = spec.arrival_s + default_deadline_s
        # NaN = not yet; chained so that building a whole workload's requests stays cheap.
        self.dispatch_s = self.pod_dispatch_s = self.first_token_s = _NAN
        self.last_token_s = self.completion_s = _NAN
        self.generated = self.finish_iter = self.admit_serial = 0
        self.preemptions = self.requeues = 0
        # Compared by identity only (is it still running where it was admitted?), so it needs no
        # type from `instance`, which imports this module: typing it `object` keeps sim acyclic.
        self.running_on: object | None = None
        self.drop_reason = ""
