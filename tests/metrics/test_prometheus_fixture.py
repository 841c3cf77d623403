"""The reusable Prometheus fixture itself: start, reload with new targets, query, stop."""

from __future__ import annotations

import pytest

from tests.metrics.fakevllm import FakePod, FakeVllmServer
from tests.support.prometheus import PrometheusFactory, static_job

pytestmark = pytest.mark.timeout(30)


def test_reload_scrapes_new_targets_then_stop(prometheus_factory: PrometheusFactory) -> None:
    server = FakeVllmServer([FakePod("fx-interactive-7d9f8-aaaaa", "fixture", 2, 0, 0.5)])
    try:
        prometheus = prometheus_factory([])
        assert prometheus.running
        assert prometheus.query("up") == []
        prometheus.reload([static_job("vllm", server.targets())])
        prometheus.wait_for_first_scrape()
        up = prometheus.query('up{pod="fx-interactive-7d9f8-aaaaa", namespace="fixture"}')
        assert [s["value"][1] for s in up] == ["1"]
        # The colon survives: classic text format, not OpenMetrics' escaping.
        running = prometheus.query('vllm:num_requests_running{namespace="fixture"}')
        assert [s["value"][1] for s in running] == ["2"]
        prometheus.stop()
        assert not prometheus.running
        prometheus.stop()  # idempotent
    finally:
        server.close()
