"""Measurements of what ships: the operator (CPU and queries per tick, memory), the gateway and
its Batch API.

The top of the layering: it drives the real operator (`chiron_operator.operator`) against the
dev cluster (`chiron_operator.devcluster`) and a fleet of fake vLLM pods scraped by a real
Prometheus. `python -m chiron_operator.perf` (`make bench-operator`) writes
docs/OPERATOR_PERFORMANCE.md; `python -m chiron_operator.perf.gateway` (`make bench-gateway`)
runs emulator pods and a gateway as processes and writes docs/GATEWAY_PERFORMANCE.md;
`python -m chiron_operator.perf.batch` (`make bench-batch`) measures a 50,000-request batch's
intake and the Batch API's dispatch cost against a plain client, into docs/BATCH_PERFORMANCE.md.
Nothing imports it.
"""
