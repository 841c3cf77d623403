"""The PromQL of a pool's own batch queue (`spec.batchQueue`), confined to the pool's namespace.

Whoever may write a pool chooses this query, and its result lands in the pool's status
(`status.signals`), so an arbitrary query would read any namespace's series. The structured
form (`spec.batchQueue.metric`) is built here, always with the pool's namespace as a matcher
and only exact label matches beside it: a tenant reads its own namespace's series and no
other. Raw PromQL (`queuedRequestsQuery`) runs only when the cluster admin allowed it
(`--allow-pool-promql`); otherwise the pool reads no queue and says why, and its batch role
holds (an unread queue is unknown, never empty).
"""

from __future__ import annotations

from typing import Final

from chiron_operator.api.batch_queue import BatchQueueMetric
from chiron_operator.api.spec import BatchQueueSpec
from chiron_operator.metrics.literals import string_literal

PROMQL_FLAG: Final = "--allow-pool-promql"
PROMQL_REFUSED: Final = (
    "spec.batchQueue.queuedRequestsQuery is raw PromQL, which this operator runs only when "
    f"its admin allows it ({PROMQL_FLAG}); read the queue with spec.batchQueue.metric instead"
)


def metric_query(
    metric: BatchQueueMetric, namespace: str, deadline_label: str, namespace_label: str
) -> str:
    """`sum by (<deadline>) (name{namespace="<pool's>", label="value", ...})`."""
    matchers = [f"{namespace_label}={string_literal(namespace)}"]
    matchers += [
        f"{label}={string_literal(value)}" for label, value in sorted(metric.matchers.items())
    ]
    return f"sum by ({deadline_label}) ({metric.name}{{{','.join(matchers)}}})"


def queue_query(
    queue: BatchQueueSpec | None,
    namespace: str,
    *,
    allow_promql: bool,
    namespace_label: str = "namespace",
) -> tuple[str | None, str]:
    """(the PromQL the pool's queue is read with, or None; why it is refused, or "")."""
    if queue is None:
        return None, ""
    if queue.metric is not None:
        return metric_query(queue.metric, namespace, queue.deadline_label, namespace_label), ""
    if allow_promql and queue.queued_requests_query is not None:
        return queue.queued_requests_query, ""
    return None, PROMQL_REFUSED
