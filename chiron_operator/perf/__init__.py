"""Measurements of what ships: the operator (CPU and queries per tick, memory) and the gateway.

The top of the layering: it drives the real operator (`chiron_operator.operator`) against the
dev cluster (`chiron_operator.devcluster`) and a fleet of fake vLLM pods scraped by a real
Prometheus. `python -m chiron_operator.perf` (`make bench-operator`) writes
docs/OPERATOR_PERFORMANCE.md; `python -m chiron_operator.perf.gateway` (`make bench-gateway`)
runs emulator pods and a gateway as processes and writes docs/GATEWAY_PERFORMANCE.md. Nothing
imports it.
"""
