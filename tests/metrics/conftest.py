"""Fixtures of the metrics tests: a real Prometheus (see tests/support/prometheus.py)."""

from tests.metrics.recorder import servers
from tests.support.prometheus import module_prometheus_factory, prometheus_factory

__all__ = ["module_prometheus_factory", "prometheus_factory", "servers"]
