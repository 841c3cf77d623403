"""A scenario's `workload:` section: one model per kind of part, each generating its requests.

Workload parts (`kind`): `azure` replays an Azure 2023 trace (`rateScale` thins or duplicates
requests, `timeCompress` squeezes time, `startS`/`durationS` cut a window of the compressed
timeline); `batch` submits a backlog at `submitS` due `deadlineS` later; `poisson`, `burst` and
`ramp` are synthetic interactive arrivals. Interactive parts may be shifted on the simulation
clock with `offsetS`. Each part draws from the Generator it is given (`scenario.build_workload`
spawns one per part from the run's seed), so a workload is a pure function of (scenario, seed).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal, Self

import numpy as np
from pydantic import Field, model_validator

from chiron_operator.api.base import SpecModel
from chiron_operator.sim import workloads
from chiron_operator.sim.requests import RequestSpec

PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
LengthSource = Literal["sharegpt", "arxiv"]


class AzurePart(SpecModel):
    """Interactive requests replayed from an Azure LLM inference 2023 trace."""

    kind: Literal["azure"]
    trace: Literal["conv", "code"]
    rate_scale: PositiveFloat = 1.0
    time_compress: PositiveFloat = 1.0
    start_s: NonNegativeFloat = 0.0
    duration_s: PositiveFloat | None = None
    offset_s: NonNegativeFloat = 0.0

    def generate(self, rng: np.random.Generator) -> list[RequestSpec]:
        specs = workloads.azure_trace(
            self.trace,
            rate_scale=self.rate_scale,
            time_compress=self.time_compress,
            start_s=self.start_s,
            duration_s=self.duration_s,
            rng=rng,
        )
        return _shifted(specs, self.offset_s)


class BatchPart(SpecModel):
    """A batch backlog: `count` requests submitted together, due `deadlineS` later."""

    kind: Literal["batch"]
    count: int = Field(ge=0)
    source: LengthSource = "arxiv"
    submit_s: NonNegativeFloat = 0.0
    deadline_s: PositiveFloat

    def generate(self, rng: np.random.Generator) -> list[RequestSpec]:
        return workloads.batch_backlog(
            self.count,
            source=self.source,
            submit_s=self.submit_s,
            deadline_s=self.deadline_s,
            rng=rng,
        )


class PoissonPart(SpecModel):
    """Interactive Poisson arrivals at a constant rate."""

    kind: Literal["poisson"]
    rate_per_s: NonNegativeFloat
    duration_s: PositiveFloat
    source: LengthSource = "sharegpt"
    offset_s: NonNegativeFloat = 0.0

    def generate(self, rng: np.random.Generator) -> list[RequestSpec]:
        specs = workloads.poisson_arrivals(
            self.rate_per_s, self.duration_s, rng, source=self.source
        )
        return _shifted(specs, self.offset_s)


class BurstPart(SpecModel):
    """Interactive arrivals at a base rate stepping to a peak for `burstLenS`."""

    kind: Literal["burst"]
    base_rate_per_s: NonNegativeFloat
    peak_rate_per_s: NonNegativeFloat
    duration_s: PositiveFloat
    burst_start_s: NonNegativeFloat
    burst_len_s: NonNegativeFloat
    source: LengthSource = "sharegpt"
    offset_s: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _burst_inside(self) -> Self:
        if self.burst_start_s + self.burst_len_s > self.duration_s:
            raise ValueError("the burst must end within durationS")
        return self

    def generate(self, rng: np.random.Generator) -> list[RequestSpec]:
        specs = workloads.burst(
            self.base_rate_per_s,
            self.peak_rate_per_s,
            self.duration_s,
            rng,
            burst_start_s=self.burst_start_s,
            burst_len_s=self.burst_len_s,
            source=self.source,
        )
        return _shifted(specs, self.offset_s)


class RampPart(SpecModel):
    """Interactive arrivals whose rate moves linearly over `durationS`."""

    kind: Literal["ramp"]
    start_rate_per_s: NonNegativeFloat
    end_rate_per_s: NonNegativeFloat
    duration_s: PositiveFloat
    source: LengthSource = "sharegpt"
    offset_s: NonNegativeFloat = 0.0

    def generate(self, rng: np.random.Generator) -> list[RequestSpec]:
        specs = workloads.ramp(
            self.start_rate_per_s, self.end_rate_per_s, self.duration_s, rng, source=self.source
        )
        return _shifted(specs, self.offset_s)


WorkloadPart = Annotated[
    AzurePart | BatchPart | PoissonPart | BurstPart | RampPart, Field(discriminator="kind")
]


def _shifted(specs: list[RequestSpec], offset_s: float) -> list[RequestSpec]:
    if not offset_s:
        return specs
    return [dataclasses.replace(s, arrival_s=s.arrival_s + offset_s) for s in specs]
