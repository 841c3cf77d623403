"""Measurements of the operator itself: CPU per tick, Prometheus queries per tick, memory.

The top of the layering: it drives the real operator (`chiron_operator.operator`) against the
dev cluster (`chiron_operator.devcluster`) and a fleet of fake vLLM pods scraped by a real
Prometheus. `python -m chiron_operator.perf` (`make bench-operator`) writes
docs/OPERATOR_PERFORMANCE.md. Nothing imports it.
"""
