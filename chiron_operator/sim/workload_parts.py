"""A scenario's `workload:` section: one model per kind of part, each generating its requests.

Workload parts (`kind`): `azure` replays an Azure 2023 trace (`rateScale` thins or duplicates
requests, `timeCompress` squeezes time, `startS`/`durationS` cut a window of the compressed
timeline); `trace` replays a trace file the user brings (`path`, in either format of
`sim.traces`; a relative path is read from the scenario file's directory) with the same knobs;
`batch` submits a backlog at `submitS` due `deadlineS` later; `poisson`, `burst` and `ramp` are
synthetic interactive arrivals. Replays and synthetic parts may be shifted on the simulation
clock with `offsetS`. Each part draws from the Generator it is given (`scenario.build_workload`
spawns one per part from the run's seed), so a workload is a pure function of (scenario, seed).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Final, Literal, Self

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from chiron_operator.api.base import SpecModel
from chiron_operator.sim import workloads
from chiron_operator.sim.requests import RequestSpec
from chiron_operator.sim.traces import read_trace

PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
LengthSource = Literal["sharegpt", "arxiv"]
BASE_DIR: Final = "base_dir"
"""Validation context key: the directory a trace part's relative `path` is read from."""


class _ReplayPart(SpecModel):
    """The knobs every replayed trace has (`workloads.Replay`), and its shift on the clock."""

    rate_scale: PositiveFloat = 1.0
    time_compress: PositiveFloat = 1.0
    start_s: NonNegativeFloat = 0.0
    duration_s: PositiveFloat | None = None
    offset_s: NonNegativeFloat = 0.0

    def replay(self) -> workloads.Replay:
        return workloads.Replay(self.rate_scale, self.time_compress, self.start_s, self.duration_s)


class AzurePart(_ReplayPart):
    """Interactive requests replayed from an Azure LLM inference 2023 trace."""

    kind: Literal["azure"]
    trace: Literal["conv", "code"]

    def generate(self, rng: np.random.Generator) -> list[RequestSpec]:
        return _shifted(workloads.azure_replay(self.trace, self.replay(), rng=rng), self.offset_s)


class TracePart(_ReplayPart):
    """Requests replayed from a trace file the user brings (formats: `sim.traces`).

    `batchDeadlineS` is the deadline of batch rows that give none; unset, the pool's
    `slo.batchDeadlineS` (`scenario.build_workload` passes it).
    """

    kind: Literal["trace"]
    path: str = Field(min_length=1)
    batch_deadline_s: PositiveFloat | None = None

    @field_validator("path")
    @classmethod
    def _resolved(cls, value: str, info: ValidationInfo) -> str:
        # Stored absolute, so that a scenario dumped and validated again (its quick variant,
        # a sweep's overrides) still reads the same file.
        base = Path((info.context or {}).get(BASE_DIR, "."))
        path = (base / Path(value).expanduser()).resolve()
        if not path.is_file():
            raise ValueError(f"no trace file {path}")
        return str(path)

    def generate(self, rng: np.random.Generator, *, default_deadline_s: float) -> list[RequestSpec]:
        specs = workloads.trace_replay(
            read_trace(self.path),
            self.replay(),
            default_deadline_s=self.batch_deadline_s or default_deadline_s,
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
    AzurePart | TracePart | BatchPart | PoissonPart | BurstPart | RampPart,
    Field(discriminator="kind"),
]


def _shifted(specs: list[RequestSpec], offset_s: float) -> list[RequestSpec]:
    if not offset_s:
        return specs
    # A deadline is absolute on the simulation clock: it moves with its request.
    return [
        dataclasses.replace(
            s,
            arrival_s=s.arrival_s + offset_s,
            deadline_s=None if s.deadline_s is None else s.deadline_s + offset_s,
        )
        for s in specs
    ]
