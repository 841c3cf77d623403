"""Bounds on the spec's numbers, and the wire types both enforcers agree on.

The policy's tunables are core types (`core.tuning`) shared with the simulator, where any
positive SLO or window is a fine experiment. A pool is different: every number in it feeds a
tick that must stay finite (an SLO of 5e-324 s turns a slack ratio into -inf, a scrape
interval of 1e-4 s into a PromQL range Prometheus refuses, 2^63 replicas overflows the CEL
rules' sums). So the pool narrows them here to what a real pool could use, once, for both
enforcers: `bounded` writes them into the CRD's schema as minimum/maximum, and
`wire_errors` checks a raw spec against that same schema (types and bounds) before pydantic
reads it. The type check also keeps the models as strict as the API server: pydantic's lax
mode would read "yes" as true and "5" as 5, both of which the CRD refuses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from chiron_operator.api.schema import INT_OR_STRING, JsonSchema, structural

Path = tuple[str, ...]
WIRE_ERROR_TYPE: Final = "chiron_wire"

# Latency targets from 100 µs (below any engine's inter-token latency: a target no pod can
# meet stays expressible, for tests and drills) to an hour (no interactive target is longer).
MAX_SLO_S: Final = 3600.0
MIN_SLO_S: Final = 0.0001
ONE_DAY_S: Final = 86400.0
# Ten thousand instances per role: far beyond any pool, small enough that no sum of counts
# (the CEL rules, the controllers) comes near int64.
MAX_REPLICAS: Final = 10_000
# vLLM's --max-num-seqs: tens to a few thousands in practice.
MAX_BATCH_SIZE_SEQS: Final = 16_384


@dataclass(frozen=True, slots=True)
class Bound:
    """`spec.<path>` lies in [minimum, maximum]; None leaves that side to the model."""

    path: Path
    minimum: float | None
    maximum: float | None


def _roles() -> Iterator[Bound]:
    for role in ("interactive", "mixed", "batch"):
        yield Bound(("roles", role, "minReplicas"), None, MAX_REPLICAS)
        yield Bound(("roles", role, "maxReplicas"), None, MAX_REPLICAS)
        for size in ("minBatchSizeSeqs", "maxBatchSizeSeqs", "initialBatchSizeSeqs"):
            yield Bound(("roles", role, size), None, MAX_BATCH_SIZE_SEQS)


BOUNDS: Final[tuple[Bound, ...]] = (
    Bound(("slo", "interactiveTtftS"), MIN_SLO_S, MAX_SLO_S),
    Bound(("slo", "interactiveItlS"), MIN_SLO_S, MAX_SLO_S),
    # Quantiles past p99.9 are read off the histograms' last buckets: noise, not a target.
    Bound(("slo", "percentileRatio"), None, 0.999),
    # A week: longer than any batch window a provider offers (OpenAI's is 24 h).
    Bound(("slo", "batchDeadlineS"), 1.0, 7 * ONE_DAY_S),
    *_roles(),
    Bound(("prometheus", "windowS"), 2.0, ONE_DAY_S),
    Bound(("prometheus", "scrapeIntervalS"), 1.0, 3600.0),
    # Ratios that divide or multiply a target: tiny ones underflow it to 0.
    Bound(("tuning", "local", "itlTargetRatio"), 0.05, None),
    Bound(("tuning", "local", "increaseMaxRatio"), 0.01, None),
    Bound(("tuning", "local", "decreaseFactorRatio"), 0.01, None),
    Bound(("tuning", "local", "increaseMinStepSeqs"), None, MAX_BATCH_SIZE_SEQS),
    Bound(("tuning", "restart", "dwellS"), None, ONE_DAY_S),
    Bound(("tuning", "restart", "urgentDwellS"), None, ONE_DAY_S),
    Bound(("tuning", "restart", "minIntervalS"), None, ONE_DAY_S),
    Bound(("tuning", "restart", "maxRestartsPerHour"), None, 60),
    Bound(("tuning", "global", "batchInstancePriorTokensPerS"), 1.0, 1e7),
    Bound(("tuning", "guards", "maxScaleUpStepReplicas"), None, MAX_REPLICAS),
    Bound(("tuning", "guards", "maxScaleDownStepReplicas"), None, MAX_REPLICAS),
    Bound(("tuning", "guards", "scaleUpCooldownS"), None, ONE_DAY_S),
    Bound(("tuning", "guards", "scaleDownStabilizationS"), None, ONE_DAY_S),
    Bound(("tuning", "guards", "metricsStalenessS"), 1.0, ONE_DAY_S),
)


def _tighten(node: JsonSchema, bound: Bound) -> None:
    if bound.minimum is not None and bound.minimum >= node.get("minimum", -math.inf):
        node["minimum"] = bound.minimum
        node.pop("exclusiveMinimum", None)
    if bound.maximum is not None and bound.maximum <= node.get("maximum", math.inf):
        node["maximum"] = bound.maximum
        node.pop("exclusiveMaximum", None)


def bounded(schema: JsonSchema) -> JsonSchema:
    """The spec's structural schema with `BOUNDS` written in (in place; also returned).

    Defaults pushed down into parent objects' defaults stay valid: every default lies within
    its bound (a test checks it).
    """
    for bound in BOUNDS:
        node = schema
        for name in bound.path:
            node = node["properties"][name]
        _tighten(node, bound)
    return schema


@cache
def spec_structural(model: type[BaseModel]) -> JsonSchema:
    """The bounded structural schema of a spec model (no CEL rules)."""
    return bounded(structural(model.model_json_schema(by_alias=True)))


def _type_ok(value: object, kind: str) -> bool:
    if kind == "integer":
        whole = isinstance(value, float) and value.is_integer()
        return whole or (isinstance(value, int) and not isinstance(value, bool))
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return True


def _range_error(value: float, node: JsonSchema) -> str | None:
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and (value < low or (node.get("exclusiveMinimum") and value == low)):
        relation = ">" if node.get("exclusiveMinimum") else ">="
        return f"must be {relation} {low:g}"
    if high is not None and (value > high or (node.get("exclusiveMaximum") and value == high)):
        relation = "<" if node.get("exclusiveMaximum") else "<="
        return f"must be {relation} {high:g}"
    return None


def _scalar_errors(value: object, node: JsonSchema) -> str | None:
    kind = node.get("type")
    if node.get(INT_OR_STRING) or value is None or not isinstance(kind, str):
        return None
    if not _type_ok(value, kind):
        return f"must be of type {kind}, got {type(value).__name__} {value!r}"[:200]
    if kind in ("integer", "number") and isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        return _range_error(value, node)
    return None


def _walk(
    value: object, node: JsonSchema, loc: tuple[str | int, ...]
) -> Iterator[InitErrorDetails]:
    if isinstance(value, dict) and node.get("type") == "object":
        properties = node.get("properties") or {}
        extra = node.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra)
            if isinstance(sub, dict):
                yield from _walk(item, sub, (*loc, str(key)))
        return
    if isinstance(value, list | tuple) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            yield from _walk(item, node["items"], (*loc, index))
        return
    if node.get("type") in ("object", "array"):
        return
    message = _scalar_errors(value, node)
    if message is not None:
        yield InitErrorDetails(
            type=PydanticCustomError(WIRE_ERROR_TYPE, "{message}", {"message": message}),
            loc=loc,
            input=value,
        )


def wire_errors(model: type[BaseModel], data: Any) -> None:
    """Raise a ValidationError naming every field of raw `data` whose type or bound the CRD's
    schema refuses; structure (objects, arrays, unknown fields) is left to pydantic."""
    if not isinstance(data, dict):
        return
    errors = list(_walk(data, spec_structural(model), ()))
    if errors:
        raise ValidationError.from_exception_data(model.__name__, errors)
