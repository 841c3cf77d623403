"""The router's gauges as Prometheus scrapes them from the gateway."""

from __future__ import annotations

from prometheus_client import generate_latest

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.gateway.metrics import GatewayMetrics
from chiron_operator.routing import PoolRouter, RoutingTuning, Ticket
from tests.emulator.emukit import sample_value


def test_batch_requests_before_their_first_token_are_a_gauge_per_pod() -> None:
    router = PoolRouter(RoutingTuning(batch_prefills_per_pod=2))
    router.set_pod("mixed-0", Role.MIXED, 8, ready=True)
    router.set_pod("batch-1", Role.BATCH, 1, ready=True)
    tickets = [Ticket(f"b{i}", RequestClass.BATCH, 0.0, 100.0, "g") for i in range(4)]
    for ticket in tickets:
        router.submit(ticket, 0.0)
    metrics = GatewayMetrics()
    metrics.watch(lambda: router)

    def prefilling(pod: str) -> float:
        text = generate_latest(metrics.registry).decode()
        return sample_value(text, "chiron_gateway_batch_prefilling_requests", target_pod=pod)

    # One on the batch pod (its cap), two on the mixed pod (the pacing), one still queued.
    assert (prefilling("batch-1"), prefilling("mixed-0")) == (1.0, 2.0)
    mixed = [t for t in tickets if t.pod == "mixed-0"]
    router.started(mixed[0])  # its first token: the queued one takes its place
    assert prefilling("mixed-0") == 2.0
    assert len(router.batch) == 0
    router.started(mixed[1])
    assert prefilling("mixed-0") == 1.0
