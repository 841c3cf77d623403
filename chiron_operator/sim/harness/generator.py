"""Generated scenarios: a seeded family of workloads that vary what production varies.

Chiron's defaults were chosen by sweeps on the packaged scenarios, and the benchmark reports on
those same scenarios. `generate(count, seed)` builds scenarios nobody tuned on, each a valid
`Scenario` (and a YAML file, `write_scenarios`, that `chiron-sim bench --scenario-file` reruns):

- **A day compressed into the horizon** (1-3 h simulated): interactive arrivals follow a
  piecewise-linear day (one `ramp` part per length source and segment) peaking at a random
  time of day, 2-6x above its trough, sometimes with a second, smaller peak; 0-3 **bursts**
  (`poisson` parts on top) multiply the rate 2-5x for a few minutes.
- **Context lengths**: short-context scenarios draw every interactive request from ShareGPT
  chat lengths; long-context ones send 40-80% of them with arXiv summarisation lengths.
- **Batch backlogs** (half the scenarios): 1-3 backlogs of different sizes and length sources,
  submitted at different times of the day, due minutes to hours later (a deadline scale of the
  horizon: short, medium or long).
- **Models**: Llama-3.1-8B (A100 or H100) and Llama-2-70B (TP4 on A100 or H100), with the
  cold-start presets of their family (warm, or pulling the image first).
- **The pool** is what a user would write: each role's `maxReplicas` sized to the load (three
  times the oracle's peak need, so the pool's maximum can serve the peak; the batch role off
  without batch work), the interactive role starting at the first minutes' need, the SLOs of the
  model's family (the 70B ones of deploy/examples/llama-70b-tp4.yaml) and everything else at
  the CRD's defaults: never tuned per scenario.

The four features the robustness table is read by (family, batch or not, context, deadline
scale) follow a factorial design (`_design`), so a few scenarios already cover every level and
24 every combination. Everything else is
drawn independently. Scenario `i` depends only on (seed, i): `generate(5, s)[:3]` equals
`generate(3, s)`. Request counts stay within the size's budget (60,000 for full scenarios), so
one run takes about a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import yaml

from chiron_operator.sim.harness.runs import EVALUATION_SEED, oracle_for
from chiron_operator.sim.scenario import Scenario, build_workload

Floats = npt.NDArray[np.float64]
FAMILIES: Final = ("8b", "70b")
CONTEXTS: Final = ("short", "long")
DEADLINE_SCALES: Final = ("short", "medium", "long")
# A deadline scale is a share of the horizon: minutes to tens of minutes on a 1 h day, up to
# two hours on a 3 h one.
_DEADLINE_SHARE: Final = {"short": (0.07, 0.12), "medium": (0.2, 0.33), "long": (0.5, 0.75)}
_PROFILES: Final = {
    "8b": ("llama31-8b-a100", "llama31-8b-h100"),
    "70b": ("llama2-70b-a100-tp4", "llama2-70b-h100-tp4"),
}
_COLD_STARTS: Final = {
    "8b": ("8b-warm", "8b-image-pull"),
    "70b": ("70b-tp8-warm", "70b-tp8-image-pull"),
}
# The 70B pool's service targets, as deploy/examples/llama-70b-tp4.yaml sets them.
_SLO_70B: Final = {"interactiveTtftS": 3.0, "interactiveItlS": 0.15, "percentileRatio": 0.9}
_SEGMENTS: Final = 12  # ramp segments of the day (two "hours" each)
# Each role's maximum over the oracle's peak need: the fluid bound ignores prefill stalls,
# which cost a long-context 70B pool several times its need.
_PEAK_HEADROOM_RATIO: Final = 3.0
# A 70B request costs several times an 8B one in instances and simulated steps: fewer of them.
_REQUEST_SHARE_70B: Final = 0.25


@dataclass(frozen=True, slots=True)
class GeneratorSize:
    """How large generated scenarios are: the horizon's range, the target request count's
    range (an 8B pool's; a 70B pool gets a share of it) and the hard request budget."""

    horizon_s: tuple[float, float]
    requests: tuple[int, int]
    budget_requests: int


FULL: Final = GeneratorSize((3600.0, 10800.0), (6_000, 24_000), 60_000)
TINY: Final = GeneratorSize((360.0, 480.0), (200, 500), 1_000)
"""Scenarios of a few minutes and a few hundred requests, for the tests."""


@dataclass(frozen=True, slots=True)
class Generated:
    """One generated scenario and the features it was drawn with (for the report)."""

    scenario: Scenario
    features: dict[str, Any]


def generate(count: int, seed: int, size: GeneratorSize = FULL) -> list[Scenario]:
    """`count` scenarios, deterministic for `seed` (see the module docstring)."""
    return [g.scenario for g in generate_with_features(count, seed, size)]


def generate_with_features(count: int, seed: int, size: GeneratorSize = FULL) -> list[Generated]:
    """`generate`, each scenario with its features."""
    if count < 0:
        raise ValueError("count must be >= 0")
    return [_one(seed, index, size) for index in range(count)]


def _design(seed: int, index: int) -> tuple[str, bool, str, str]:
    """(family, batch or not, context, deadline scale) of scenario `index`.

    A fixed factorial design over the indices: every 2 scenarios hold both levels of the
    first 2-level feature, every 4 every pair of the first two, every 8 every triple, every 6
    the three deadline scales among the scenarios with batch work as among those without, and
    every 24 every combination; its levels are mapped per seed in a random order.
    """
    rng = np.random.default_rng([seed, 1_000])
    codes = (index % 2, (index // 2 + index) % 2, (index // 4 + index // 2) % 2, (index // 2) % 3)
    family, batch, context, deadline = (
        int(rng.permutation(levels)[code]) for levels, code in zip((2, 2, 2, 3), codes, strict=True)
    )
    return FAMILIES[family], batch == 1, CONTEXTS[context], DEADLINE_SCALES[deadline]


def _one(seed: int, index: int, size: GeneratorSize) -> Generated:
    family, with_batch, context, deadline_scale = _design(seed, index)
    rng = np.random.default_rng([seed, index])
    horizon_s = round(float(rng.uniform(*size.horizon_s)) / 60.0) * 60.0
    share = 1.0 if family == "8b" else _REQUEST_SHARE_70B
    target_requests = float(rng.uniform(*size.requests)) * share
    long_share = 0.0 if context == "short" else round(float(rng.uniform(0.4, 0.8)), 2)
    day = _Day.draw(rng, horizon_s)
    batch_share = float(rng.uniform(0.15, 0.5)) if with_batch else 0.0
    peak_rate_per_s = target_requests / (1.0 + batch_share) / day.mass_s
    backlogs = (
        _backlogs(rng, horizon_s, target_requests * batch_share, deadline_scale)
        if with_batch
        else []
    )
    features = {
        "family": family,
        "batch": with_batch,
        "context": context,
        "long_share": long_share,
        "deadline_scale": deadline_scale if with_batch else None,
        "horizon_s": horizon_s,
        "peak_trough_ratio": round(day.ratio, 2),
        "bursts": len(day.bursts),
        "backlogs": [b["count"] for b in backlogs],
        "deadlines_s": [b["deadlineS"] for b in backlogs],
    }
    data: dict[str, Any] = {
        "name": f"g{seed}-{index:02d}-{family}-{context}-{'batch' if with_batch else 'chat'}",
        "profile": str(rng.choice(_PROFILES[family])),
        "coldStart": str(rng.choice(_COLD_STARTS[family])),
        "horizonS": horizon_s,
        "workload": [*day.parts(peak_rate_per_s, long_share, rng), *backlogs],
    }
    data["tensorParallelSize"] = 1 if family == "8b" else 4
    return Generated(_sized(data, features, size, family), features)


@dataclass(frozen=True, slots=True)
class _Day:
    """A day's relative rate at `_SEGMENTS + 1` knots (peak 1), and its bursts as (start,
    length, factor)."""

    knots_s: tuple[float, ...]
    relative: tuple[float, ...]
    bursts: tuple[tuple[float, float, float], ...]
    ratio: float

    @classmethod
    def draw(cls, rng: np.random.Generator, horizon_s: float) -> _Day:
        ratio = float(rng.uniform(2.0, 6.0))
        phase = np.linspace(0.0, 1.0, _SEGMENTS + 1)
        peak_phase = float(rng.uniform(0.0, 1.0))
        shape = _bump(phase, peak_phase, int(rng.integers(1, 4)))
        if rng.random() < 0.5:  # a second, smaller peak (a lunch dip, an evening in another zone)
            second = (peak_phase + float(rng.uniform(0.3, 0.6))) % 1.0
            shape = np.maximum(shape, float(rng.uniform(0.3, 0.7)) * _bump(phase, second, 4))
        shape = (shape - shape.min()) / (shape.max() - shape.min())
        relative = 1.0 / ratio + (1.0 - 1.0 / ratio) * shape
        bursts = []
        for _ in range(int(rng.choice(4, p=(0.2, 0.35, 0.3, 0.15)))):
            length_s = max(30.0, float(rng.uniform(120.0, 480.0)) * horizon_s / 7200.0)
            start_s = float(rng.uniform(0.0, horizon_s - length_s))
            bursts.append((round(start_s), round(length_s), round(float(rng.uniform(2, 5)), 2)))
        knots = tuple(float(t) for t in phase * horizon_s)
        return cls(knots, tuple(float(r) for r in relative), tuple(bursts), ratio)

    def at(self, time_s: float) -> float:
        return float(np.interp(time_s, self.knots_s, self.relative))

    @property
    def mass_s(self) -> float:
        """Expected interactive requests per unit of peak rate (req/s), bursts included."""
        knots, rel = np.asarray(self.knots_s), np.asarray(self.relative)
        base = float(np.sum(np.diff(knots) * (rel[:-1] + rel[1:]) / 2.0))
        return base + sum((f - 1.0) * self.at(s + n / 2) * n for s, n, f in self.bursts)

    def parts(
        self, peak_rate_per_s: float, long_share: float, rng: np.random.Generator
    ) -> list[dict[str, Any]]:
        """The day as ramp parts per length source, then one Poisson part per burst."""
        parts: list[dict[str, Any]] = []
        for source, weight in (("sharegpt", 1.0 - long_share), ("arxiv", long_share)):
            if weight <= 0.0:
                continue
            for k in range(_SEGMENTS):
                start, end = self.knots_s[k], self.knots_s[k + 1]
                parts.append(
                    {
                        "kind": "ramp",
                        "startRatePerS": _rate(peak_rate_per_s * weight * self.relative[k]),
                        "endRatePerS": _rate(peak_rate_per_s * weight * self.relative[k + 1]),
                        "durationS": round(end - start, 1),
                        "source": source,
                        "offsetS": round(start, 1),
                    }
                )
        for start, length, factor in self.bursts:
            source = "arxiv" if rng.random() < long_share else "sharegpt"
            extra = peak_rate_per_s * (factor - 1.0) * self.at(start + length / 2)
            parts.append(
                {
                    "kind": "poisson",
                    "ratePerS": _rate(extra),
                    "durationS": length,
                    "source": source,
                    "offsetS": start,
                }
            )
        return parts


def _bump(phase: Floats, peak_phase: float, sharpness: int) -> Floats:
    """A raised cosine over the day peaking at `peak_phase` (1 there, 0 half a day away)."""
    bump: Floats = ((1.0 + np.cos(2.0 * math.pi * (phase - peak_phase))) / 2.0) ** sharpness
    return bump


def _rate(value: float) -> float:
    return round(value, 4)


def _backlogs(
    rng: np.random.Generator, horizon_s: float, requests: float, scale: str
) -> list[dict[str, Any]]:
    """1-3 backlogs sharing `requests` (a count), each submitted at a random time of the day
    and due within the horizon after a deadline of `scale`."""
    count = int(rng.integers(1, 4))
    weights = rng.dirichlet(np.ones(count))
    low, high = _DEADLINE_SHARE[scale]
    parts = []
    for weight in weights.tolist():
        deadline_s = round(float(rng.uniform(low, high)) * horizon_s / 60.0) * 60.0
        submit_s = round(float(rng.uniform(0.0, horizon_s - deadline_s)) / 10.0) * 10.0
        parts.append(
            {
                "kind": "batch",
                "count": max(1, round(requests * weight)),
                "source": "arxiv" if rng.random() < 0.7 else "sharegpt",
                "submitS": submit_s,
                "deadlineS": deadline_s,
            }
        )
    return sorted(parts, key=lambda p: float(p["submitS"]))


def _sized(
    data: dict[str, Any], features: dict[str, Any], size: GeneratorSize, family: str
) -> Scenario:
    """The scenario with its pool sized to its load, and its workload within the budget."""
    data["pool"] = {"slo": dict(_SLO_70B) if family == "70b" else {}}
    scenario = Scenario.model_validate(data)
    workload = build_workload(scenario, EVALUATION_SEED)
    if len(workload) > size.budget_requests:
        # Poisson noise, or a 70B day drawn near the top: thin everything to fit, keeping the shape.
        scenario = Scenario.model_validate(
            _scaled(data, 0.95 * size.budget_requests / len(workload))
        )
        workload = build_workload(scenario, EVALUATION_SEED)
    bound = oracle_for(scenario, workload)
    most = max(3, math.ceil(_PEAK_HEADROOM_RATIO * bound.peak_instances))
    first = max(bound.interactive_instances[:2], default=0.0)
    roles = {
        "interactive": {"maxReplicas": most},
        "mixed": {"maxReplicas": most},
        "batch": {"maxReplicas": most if features["batch"] else 0},
    }
    features["requests"] = len(workload)
    features["oracle_peak_instances"] = bound.peak_instances
    sized = {
        **scenario.model_dump(by_alias=True, mode="json", exclude_defaults=True),
        "description": _description(scenario, features),
        "initialReplicas": {"interactive": min(most, max(1, math.ceil(1.5 * first)))},
        "pool": {**data["pool"], "roles": roles},
    }
    return Scenario.model_validate(sized)


def _scaled(data: dict[str, Any], factor: float) -> dict[str, Any]:
    """`data` with every rate and backlog multiplied by `factor`."""
    parts = []
    for part in data["workload"]:
        scaled = dict(part)
        for key in ("startRatePerS", "endRatePerS", "ratePerS"):
            if key in scaled:
                scaled[key] = _rate(scaled[key] * factor)
        if "count" in scaled:
            scaled["count"] = max(1, round(scaled["count"] * factor))
        parts.append(scaled)
    return {**data, "workload": parts}


def _description(scenario: Scenario, features: dict[str, Any]) -> str:
    bursts = features["bursts"]
    lengths = (
        "ShareGPT chat lengths"
        if features["context"] == "short"
        else f"{100 * features['long_share']:.0f}% arXiv (long-context) lengths"
    )
    text = (
        f"Generated: {scenario.profile}, {scenario.cold_start} cold starts; a day in "
        f"{features['horizon_s'] / 3600:.1f} h, peak {features['peak_trough_ratio']:.1f}x the "
        f"trough, {bursts} burst{'' if bursts == 1 else 's'}; {lengths}"
    )
    if not features["batch"]:
        return text + "; no batch work."
    backlogs = ", ".join(
        f"{count:,} due in {deadline / 60:.0f} min"
        for count, deadline in zip(features["backlogs"], features["deadlines_s"], strict=True)
    )
    return f"{text}; batch backlogs: {backlogs}."


def write_scenarios(scenarios: Sequence[Scenario], out_dir: Path) -> list[Path]:
    """Each scenario as `out_dir/NAME.yaml`, loadable by `load_scenario` (and so by
    `chiron-sim run` and `chiron-sim bench --scenario-file`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for scenario in scenarios:
        data = scenario.model_dump(by_alias=True, mode="json", exclude_defaults=True)
        data["profile"] = scenario.profile
        # The roles in full, even where they equal the CRD's defaults: the sizing is the point.
        data["pool"] = {
            **data.get("pool", {}),
            "roles": {
                role.value: {"minReplicas": b.min_replicas, "maxReplicas": b.max_replicas}
                for role, b in scenario.bounds().items()
            },
        }
        path = out_dir / f"{scenario.name}.yaml"
        header = "# Generated by chiron_operator.sim.harness.generator (`chiron-sim robustness`).\n"
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
        path.write_text(header + text)
        paths.append(path)
    return paths
