"""Prometheus -> per-pod vLLM signals -> `PoolSnapshot`.

Per tick the operator builds a `PoolQuery` from the pool's spec, calls
`PrometheusSource.fetch` (at most eight batched PromQL queries, constant in pod count), and
passes the result with the Kubernetes facts it read itself to the pure `build_snapshot`.

- `promql`: the query builders (pure); `batch_queue`: a pool's own batch queue, confined to
  its namespace; `literals`: PromQL string, regex and duration text.
- `source`: the HTTP client (`prometheus_api_client.PrometheusConnect`), over `transport`'s
  session (no redirects, checked peers, a deadline per fetch); `destination`: which addresses
  a pool's Prometheus may have and which URLs the operator's own token may go to.
- `parse`: result vectors -> values, with the rules for absent, NaN, partial and stale data.
- `snapshot`: Kubernetes facts + a fetch -> `PoolSnapshot`.
"""

from chiron_operator.metrics.promql import PoolQuery, PoolSelector, Signal
from chiron_operator.metrics.results import (
    OutputLengths,
    PodMetrics,
    PoolMetrics,
    QueuedGroup,
    QueueMetrics,
)
from chiron_operator.metrics.snapshot import (
    PodFacts,
    RoleFacts,
    batch_output_lengths,
    build_snapshot,
)
from chiron_operator.metrics.source import PrometheusSource

__all__ = [
    "OutputLengths",
    "PodFacts",
    "PodMetrics",
    "PoolMetrics",
    "PoolQuery",
    "PoolSelector",
    "PrometheusSource",
    "QueueMetrics",
    "QueuedGroup",
    "RoleFacts",
    "Signal",
    "batch_output_lengths",
    "build_snapshot",
]
