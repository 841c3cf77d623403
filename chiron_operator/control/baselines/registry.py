"""The one table of baselines: policy name -> factory, for every driver that builds one.

A driver (the benchmark harness, a test, an operator running a baseline for comparison) says
what it knows of the pool in `BaselineParams` and gets a `BoundPolicy`; which tuning each
baseline reads from those facts is decided here, once. Parameters a baseline does not read are
ignored; one it needs and lacks is an error that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from chiron_operator.control.baselines import hpa, keda, kpa, llumnix, static
from chiron_operator.control.baselines.tuning import (
    HpaTuning,
    KedaTuning,
    KpaTuning,
    LlumnixTuning,
    StaticTuning,
)
from chiron_operator.control.policy import BoundPolicy
from chiron_operator.core.enums import Role
from chiron_operator.core.tuning import RoleBounds


@dataclass(frozen=True, slots=True)
class BaselineParams:
    """What the driver knows that a baseline may need; `None` means "the baseline's default".

    - `bounds`: the roles the baseline scales and their instance bounds.
    - `static_replicas`: the fixed count per role of `static` (default: each role's max).
    - `target_concurrency_per_replica`: KPA's target (default: Knative's).
    - `kv_capacity_blocks`: an instance's KV cache in blocks, which Llumnix's freeness reads.
    - `freeness_blocks`: (scale-up, scale-down) thresholds of `llumnix-tuned`; required there.
    """

    bounds: Mapping[Role, RoleBounds]
    static_replicas: Mapping[Role, int] | None = None
    target_concurrency_per_replica: float | None = None
    kv_capacity_blocks: int | None = None
    freeness_blocks: tuple[float, float] | None = None


Factory = Callable[[BaselineParams], BoundPolicy[Any, Any]]


def _static(params: BaselineParams) -> BoundPolicy[Any, Any]:
    if params.static_replicas is None:
        return static.bound(StaticTuning(bounds=params.bounds))
    return static.bound(StaticTuning(bounds=params.bounds, replicas=params.static_replicas))


def _kpa(params: BaselineParams) -> BoundPolicy[Any, Any]:
    if params.target_concurrency_per_replica is None:
        return kpa.bound(KpaTuning(bounds=params.bounds))
    target = params.target_concurrency_per_replica
    return kpa.bound(KpaTuning(bounds=params.bounds, target_concurrency_per_replica=target))


def _llumnix_tuning(params: BaselineParams) -> LlumnixTuning:
    if params.kv_capacity_blocks is None:
        return LlumnixTuning(bounds=params.bounds)
    return LlumnixTuning(bounds=params.bounds, kv_capacity_blocks=params.kv_capacity_blocks)


def _llumnix_tuned(params: BaselineParams) -> BoundPolicy[Any, Any]:
    if params.freeness_blocks is None:
        raise ValueError(f"{llumnix.TUNED_POLICY_NAME} needs its swept freeness_blocks")
    up, down = params.freeness_blocks
    return llumnix.bound_tuned(up, down, _llumnix_tuning(params))


BASELINES: Final[Mapping[str, Factory]] = MappingProxyType(
    {
        static.POLICY_NAME: _static,
        hpa.POLICY_NAME: lambda p: hpa.bound(HpaTuning(bounds=p.bounds)),
        keda.POLICY_NAME: lambda p: keda.bound(KedaTuning(bounds=p.bounds)),
        kpa.POLICY_NAME: _kpa,
        llumnix.POLICY_NAME: lambda p: llumnix.bound(_llumnix_tuning(p)),
        llumnix.TUNED_POLICY_NAME: _llumnix_tuned,
    }
)
"""Every baseline by policy name, in the order reports list them."""


def build_baseline(name: str, params: BaselineParams) -> BoundPolicy[Any, Any]:
    """The baseline called `name`, built from what the driver knows."""
    factory = BASELINES.get(name)
    if factory is None:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return factory(params)
