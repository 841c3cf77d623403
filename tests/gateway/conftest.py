"""Fixtures of the gateway tests: a real Prometheus (see tests/support/prometheus.py)."""

from tests.support.prometheus import module_prometheus_factory, prometheus_factory

__all__ = ["module_prometheus_factory", "prometheus_factory"]
