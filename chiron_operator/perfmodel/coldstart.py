"""Cold-start delays (pod scheduled -> serving) built from public vLLM start-up reports.

Each preset is a lognormal whose 5th and 95th percentiles are the low and high ends of the
reported range, so about 90% of sampled starts fall inside what was reported and the tail beyond
it stays possible but thin. Rows of `data/cold_start_reports/vllm_cold_start_reports.csv` feed
the presets as follows (source, phase):

- `8b-warm` (image on the node, local weights): any of vllm#20264 `pod_start_to_first_response`,
  vllm#20264 `init_engine` and vllm#11005 (a PR) `init_engine_O3` -> the range of their totals.
- `70b-tp8-warm`: the phases of vllm#19824 run one after the other: weight load, dynamo, torch
  compile and CUDA-graph capture always; the 60 s P2P check only at the high end (it can be
  skipped with VLLM_SKIP_P2P_CHECK=1).
- the image-pull adder: BentoML `image_pull` + `layer_extract` of a 20 GB image, in sequence.
- `8b-image-pull` and `70b-tp8-image-pull`: the warm preset plus the adder.

Unused rows: single phases of other reports (weight loads, compile, memory profiling: parts of
a start with no total to pair them with); BentoML `config_and_start` (~2 min, its stock baseline
right after a pull with cold caches, not the warm condition; the pull presets add only the
pull); `init_engine_default` (vLLM before torch.compile became the default); the vendor claim of
<30 s after a lazy-loading redesign; `first_request_after_start` (a request latency, not a
start).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Final

import numpy as np

DATA_PATH = Path(__file__).parent / "data" / "cold_start_reports" / "vllm_cold_start_reports.csv"

Z_95: Final = 1.6448536269514722  # standard normal 95th percentile
RowKey = tuple[str, str]  # (short source, phase), e.g. ("vllm#19824", "torch_compile")


@dataclass(frozen=True, slots=True)
class ColdStartModel:
    """Lognormal cold-start delay with 5th/95th percentiles `low_s`/`high_s`."""

    name: str
    low_s: float
    high_s: float
    evidence: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 < self.low_s <= self.high_s:
            raise ValueError(f"need 0 < low_s <= high_s, got {self.low_s}, {self.high_s}")

    @property
    def median_s(self) -> float:
        """Median delay, the geometric mean of the two percentiles."""
        return math.sqrt(self.low_s * self.high_s)

    @property
    def sigma(self) -> float:
        """Log-space standard deviation."""
        return math.log(self.high_s / self.low_s) / (2.0 * Z_95)

    def sample_s(self, rng: np.random.Generator) -> float:
        """One cold-start delay in seconds, drawn from `rng`."""
        return float(rng.lognormal(math.log(self.median_s), self.sigma))

    def plus(self, other: ColdStartModel, name: str) -> ColdStartModel:
        """Two delays in sequence.

        Percentiles are added, which is exact when the two are comonotonic (a node slow to pull
        is slow to start too) and errs towards a longer tail otherwise.
        """
        return ColdStartModel(
            name,
            self.low_s + other.low_s,
            self.high_s + other.high_s,
            self.evidence + other.evidence,
        )


def _short_source(url: str) -> str:
    """A report's short source: `vllm#19824` on GitHub (issues and PRs share numbers), else host."""
    parts = url.rstrip("/").split("/")
    return f"{parts[4]}#{parts[6]}" if parts[2] == "github.com" else parts[2]


@cache
def _report_rows() -> dict[RowKey, tuple[float, float]]:
    rows: dict[RowKey, tuple[float, float]] = {}
    with DATA_PATH.open(newline="") as f:
        for row in csv.DictReader(f):
            key = (_short_source(row["source_url"]), row["phase"])
            rows[key] = (float(row["seconds_low"]), float(row["seconds_high"]))
    return rows


def _label(key: RowKey) -> str:
    return f"{key[0]} {key[1]}"


def _any_of(name: str, keys: tuple[RowKey, ...]) -> ColdStartModel:
    """Reports of the same whole start: their spread is the range."""
    rows = _report_rows()
    low = min(rows[k][0] for k in keys)
    high = max(rows[k][1] for k in keys)
    return ColdStartModel(name, low, high, tuple(_label(k) for k in keys))


def _phases(
    name: str, required: tuple[RowKey, ...], optional: tuple[RowKey, ...] = ()
) -> ColdStartModel:
    """Phases run in sequence; optional ones (skippable) only lengthen the high end."""
    rows = _report_rows()
    low = sum(rows[k][0] for k in required)
    high = sum(rows[k][1] for k in required + optional)
    return ColdStartModel(name, low, high, tuple(_label(k) for k in required + optional))


def image_pull_20gb() -> ColdStartModel:
    """Extra delay on a node that must pull and unpack a 20 GB vLLM image first."""
    bento = "bentoml.com"
    return _phases("image-pull-20gb", ((bento, "image_pull"), (bento, "layer_extract")))


@cache
def presets() -> Mapping[str, ColdStartModel]:
    """Every named cold-start preset."""
    warm_8b = _any_of(
        "8b-warm",
        (
            ("vllm#20264", "pod_start_to_first_response"),
            ("vllm#20264", "init_engine"),
            ("vllm#11005", "init_engine_O3"),
        ),
    )
    issue = "vllm#19824"
    warm_70b = _phases(
        "70b-tp8-warm",
        tuple(
            (issue, p)
            for p in (
                "weight_load",
                "dynamo_bytecode_transform",
                "torch_compile",
                "cuda_graph_capture",
            )
        ),
        optional=((issue, "p2p_access_check"),),
    )
    pull = image_pull_20gb()
    models = (
        warm_8b,
        warm_8b.plus(pull, "8b-image-pull"),
        warm_70b,
        warm_70b.plus(pull, "70b-tp8-image-pull"),
    )
    return MappingProxyType({m.name: m for m in models})


def cold_start_names() -> tuple[str, ...]:
    """Names of the presets."""
    return tuple(presets())


def cold_start(name: str) -> ColdStartModel:
    """The preset `name` (ValueError listing the known names if unknown)."""
    try:
        return presets()[name]
    except KeyError:
        known = ", ".join(cold_start_names())
        raise ValueError(f"unknown cold-start preset {name!r}; known: {known}") from None


def presets_markdown() -> str:
    """Presets as a Markdown table."""
    rows = [
        "| preset | p5 s | median s | p95 s | rows (source, phase) |",
        "|---|---:|---:|---:|---|",
    ]
    for m in presets().values():
        rows.append(
            f"| {m.name} | {m.low_s:.0f} | {m.median_s:.0f} | {m.high_s:.0f} "
            f"| {'; '.join(m.evidence)} |"
        )
    return "\n".join(rows)
