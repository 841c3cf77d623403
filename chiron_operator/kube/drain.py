"""How a role's vLLM pods leave without failing requests: their preStop hook, grace period and
vLLM's --shutdown-timeout, from `spec.drain`. Pure.

What happens to a deleted pod (a scale-down, or a rolling restart for a new --max-num-seqs):
1. Kubernetes takes it out of its Services' endpoints; kube-proxy, gateways and load
   balancers notice seconds later, so the preStop hook sleeps `endpointDelayS` while vLLM
   keeps serving the requests it has (and any that still arrive).
2. SIGTERM: vLLM fails /health (the readiness probe), refuses new requests with 503 and lets
   the requests in flight finish, for at most --shutdown-timeout (`requestTimeoutS`); then it
   aborts what is left and exits.
3. SIGKILL at terminationGracePeriodSeconds, counted from the deletion: the preStop sleep, the
   request timeout and `ENGINE_SHUTDOWN_S` for vLLM's own shutdown after the drain.

The hook runs `/bin/sleep` (exec) rather than Kubernetes' native `sleep` action: the chart
supports Kubernetes 1.30 and later, and the sleep action is GA only from 1.34 (beta in 1.30 to
1.33, where a cluster may have its feature gate off). vLLM images are Ubuntu-based and ship
/bin/sleep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from chiron_operator.api.spec import LLMServingPoolSpec

SHUTDOWN_TIMEOUT_FLAG: Final = "--shutdown-timeout"
SLEEP_BINARY: Final = "/bin/sleep"
# vLLM gives its engine-core and worker processes 5 s to exit once the API server is done.
ENGINE_SHUTDOWN_S: Final = 5


@dataclass(frozen=True, slots=True)
class DrainTiming:
    """A pod's termination timeline, whole seconds as the Pod API takes them."""

    endpoint_delay_s: int
    request_timeout_s: int

    @property
    def grace_period_s(self) -> int:
        """terminationGracePeriodSeconds: every phase of the drain fits in it."""
        return self.endpoint_delay_s + self.request_timeout_s + ENGINE_SHUTDOWN_S


def drain_timing(spec: LLMServingPoolSpec) -> DrainTiming:
    """The pool's drain timeline (`requestTimeoutS` defaults from the SLOs)."""
    return DrainTiming(spec.drain.endpoint_delay_s, spec.drain.request_timeout(spec.slo))


def shutdown_args(spec: LLMServingPoolSpec) -> list[str]:
    """vLLM's --shutdown-timeout when the pool asks for it (older vLLM rejects the flag)."""
    if not spec.drain.shutdown_timeout_flag:
        return []
    return [SHUTDOWN_TIMEOUT_FLAG, str(drain_timing(spec).request_timeout_s)]


def lifecycle(spec: LLMServingPoolSpec) -> dict[str, Any] | None:
    """The container's lifecycle: a preStop sleep, or None when the delay is 0."""
    delay = drain_timing(spec).endpoint_delay_s
    if delay == 0:
        return None
    return {"preStop": {"exec": {"command": [SLEEP_BINARY, str(delay)]}}}
