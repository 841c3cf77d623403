"""`spec.batchQueue.metric`: the structured batch queue a tenant may name without PromQL.

Its rules are the models' and the CRD's (CEL) alike, written next to each other here.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Self

from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic.config import JsonDict
from pydantic_core import InitErrorDetails, PydanticCustomError

from chiron_operator.api.base import SpecModel
from chiron_operator.api.rules import RULE_ERROR_TYPE

LABEL_NAME_PATTERN: Final = "^[a-zA-Z_][a-zA-Z0-9_]*$"
BAD_MATCHER_LABEL: Final = (
    "spec.batchQueue.metric.matchers: keys must be label names, not `namespace` (always the "
    "pool's) and not starting with `__`"
)
ONE_QUEUE_SOURCE: Final = (
    "spec.batchQueue.queuedRequestsQuery: set exactly one of spec.batchQueue.metric and "
    "spec.batchQueue.queuedRequestsQuery"
)
# The CRD's twin of `check_one_source`, blaming the same field.
ONE_QUEUE_SOURCE_RULE: Final[JsonDict] = {
    "rule": "has(self.metric) != has(self.queuedRequestsQuery)",
    "message": ONE_QUEUE_SOURCE,
    "fieldPath": ".queuedRequestsQuery",
    "reason": "FieldValueInvalid",
}


def check_one_source(model: object, metric: object, query: object) -> None:
    """Raise a ValidationError at `queuedRequestsQuery` unless exactly one source is set."""
    if (metric is None) != (query is None):
        return
    error = InitErrorDetails(
        type=PydanticCustomError(RULE_ERROR_TYPE, "{message}", {"message": ONE_QUEUE_SOURCE}),
        loc=("queuedRequestsQuery",),
        input=model,
    )
    raise ValidationError.from_exception_data(type(model).__name__, [error])


def _matcher_label_ok(label: str) -> bool:
    return (
        re.fullmatch(LABEL_NAME_PATTERN, label) is not None
        and not label.startswith("__")
        and label != "namespace"
    )


class BatchQueueMetric(SpecModel):
    """A series of the pool's own namespace counting its queued batch requests.

    The operator reads `sum by (<deadlineLabel>) (<name>{namespace="<the pool's>", <matchers>})`:
    the namespace is always the pool's, and each matcher an exact label value.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.matchers) || self.matchers.all(k, "
                    f"k.matches('{LABEL_NAME_PATTERN}') && !k.startsWith('__') "
                    "&& k != 'namespace')",
                    "message": BAD_MATCHER_LABEL,
                    "fieldPath": ".matchers",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    )

    name: str = Field(
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        max_length=256,
        description="Metric name, e.g. my_batch_queue_requests.",
    )
    matchers: dict[str, Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict,
        max_length=16,
        description="Exact label values the series must have, e.g. {pool: llama-8b}; not "
        "`namespace` (always the pool's) and no `__` labels.",
    )

    @model_validator(mode="after")
    def _labels(self) -> Self:
        bad = [k for k in self.matchers if not _matcher_label_ok(k)]
        if bad:
            raise ValueError(f"{BAD_MATCHER_LABEL} (got {', '.join(map(repr, sorted(bad)))})")
        return self
