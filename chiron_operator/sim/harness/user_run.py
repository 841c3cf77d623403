"""`chiron-sim run --trace FILE --pool POOL.yaml`: a user's own traffic on a user's own pool.

The manifest is read with the product's own models (`api.LLMServingPool`: the rules the API
server and the operator apply; a problem names its line and column in the file). Its `slo`,
`roles`, `tuning` and `control` (every section a scenario's pool has) become the scenario's
`pool:` section unchanged, so the policy runs on `api.spec.pool_tuning` of them: the function
the operator's `LLMServingPoolSpec.to_tuning()` calls. Its `fast_path` (the gateway caps pods
at the target batch size) follows the roster entry that runs (`policies.setup`), and the entry
follows `spec.gateway.enabled`: `chiron` with the gateway, `chiron-services` without.

The manifest's `prometheus.scrapeIntervalS` and `windowS` become the scenario's `simulation`
section: the signals are read as that Prometheus would scrape them. The trace becomes one
`{kind: trace}` part; the run lasts until `TAIL_S` after the last
arrival (time for the last answers) or the latest batch deadline, whichever is later. The
scenario is written to `scenario.yaml` in the output directory before the run: it is what ran,
and a starting point to edit (knobs, starting replicas, engine) and run again.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml
from pydantic import ValidationError

from chiron_operator.api.spec import LLMServingPool, LLMServingPoolSpec
from chiron_operator.perfmodel.coldstart import cold_start_names
from chiron_operator.perfmodel.profiles import SPECS
from chiron_operator.sim.harness.policies import CHIRON, CHIRON_SERVICES
from chiron_operator.sim.scenario import ScenarioPool
from chiron_operator.sim.sourcefile import at, located, position, read_yaml_documents
from chiron_operator.sim.traces import Trace, read_trace

TAIL_S: Final = 300.0
DEFAULT_PROFILE: Final = "llama31-8b-a100"
DEFAULT_COLD_START: Final = "8b-warm"
# The spec's sections a scenario's pool has: taken from the models, so a section added to
# the scenario's pool is read from the manifest too.
_POOL_SECTIONS: Final = frozenset(ScenarioPool.model_fields) & frozenset(
    LLMServingPoolSpec.model_fields
)


def seconds_arg(text: str) -> float:
    """A flag's positive number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"{text} seconds: must be > 0")
    return seconds


def cold_start_arg(text: str) -> str | float:
    """`--cold-start`: a preset's name, or a fixed number of seconds."""
    if text in cold_start_names():
        return text
    try:
        return seconds_arg(text)
    except argparse.ArgumentTypeError:
        known = ", ".join(cold_start_names())
        raise argparse.ArgumentTypeError(f"{text!r}: a preset ({known}) or seconds > 0") from None


def load_pool(path: Path) -> tuple[LLMServingPool, yaml.Node]:
    """The one `LLMServingPool` of a manifest (other documents, a Secret say, are skipped)."""
    pools = [
        (data, node)
        for data, node in read_yaml_documents(path)
        if isinstance(data, dict) and data.get("kind") == "LLMServingPool"
    ]
    if not pools:
        raise at(path, 1, 1, "no document with kind: LLMServingPool")
    if len(pools) > 1:
        mark = pools[1][1].start_mark
        message = "more than one LLMServingPool: put the one to simulate in a file of its own"
        raise at(path, mark.line + 1, mark.column + 1, message)
    data, node = pools[0]
    try:
        return LLMServingPool.model_validate(data), node
    except ValidationError as error:
        raise located(path, node, error) from None


def default_policy(pool: LLMServingPool) -> str:
    """Chiron behind the pool's gateway, or behind plain Services when the gateway is off."""
    return CHIRON if pool.spec.gateway.enabled else CHIRON_SERVICES


def horizon_s(trace: Trace, default_deadline_s: float, interval_s: float) -> float:
    """Until `TAIL_S` after the last arrival or the latest deadline, in whole control ticks."""
    end = float(trace.arrival_s[-1]) + TAIL_S
    if trace.batch.any():
        after = np.where(
            np.isnan(trace.deadline_after_s), default_deadline_s, trace.deadline_after_s
        )
        end = max(end, float((trace.arrival_s + after)[trace.batch].max()))
    return math.ceil(end / interval_s) * interval_s


def _name(pool: LLMServingPool, trace_path: Path) -> str:
    """A scenario name from the pool's (a Kubernetes name may hold dots, a scenario's may not)."""
    raw = str(pool.metadata.get("name") or trace_path.stem).lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:63]
    return name or "my-traffic"


def _check_profile(pool_path: Path, root: yaml.Node, pool: LLMServingPool, profile: str) -> int:
    """The profile's GPUs per instance, which must be the pool's tensorParallelSize."""
    tp = next(s.tp for s in SPECS if s.name == profile)
    wanted = pool.spec.template.tensor_parallel_size
    if tp != wanted:
        fits = ", ".join(s.name for s in SPECS if s.tp == wanted) or "none"
        line, column = position(root, ("spec", "template", "tensorParallelSize"))
        message = (
            f"spec.template.tensorParallelSize is {wanted}, but profile {profile} runs on {tp} "
            f"GPU(s): pick a profile of the same size with --profile ({fits})"
        )
        raise at(pool_path, line, column, message)
    return tp


def prepare(
    out: Path,
    trace_path: Path,
    pool_path: Path,
    *,
    profile: str | None = None,
    cold_start: str | float | None = None,
    fixed_horizon_s: float | None = None,
    policy: str | None = None,
) -> tuple[Path, str]:
    """Write the scenario of a `--trace` run into `out`: its path, and the policy to run."""
    pool, root = load_pool(pool_path)
    scenario = trace_scenario(
        trace_path,
        pool_path,
        (pool, root),
        profile=profile or DEFAULT_PROFILE,
        cold_start=cold_start or DEFAULT_COLD_START,
        fixed_horizon_s=fixed_horizon_s,
    )
    chosen = policy or default_policy(pool)
    return write_trace_scenario(out, scenario, chosen), chosen


def trace_scenario(
    trace_path: Path,
    pool_path: Path,
    loaded: tuple[LLMServingPool, yaml.Node],
    *,
    profile: str = DEFAULT_PROFILE,
    cold_start: str | float = DEFAULT_COLD_START,
    fixed_horizon_s: float | None = None,
) -> dict[str, Any]:
    """The scenario (wire form) that replays `trace_path` on the pool `load_pool` read."""
    trace = read_trace(trace_path)
    pool, root = loaded
    tp = _check_profile(pool_path, root, pool, profile)
    spec = pool.spec
    horizon = fixed_horizon_s or horizon_s(
        trace, spec.slo.batch_deadline_s, spec.control.interval_s
    )
    sections = spec.model_dump(by_alias=True, mode="json", include=set(_POOL_SECTIONS))
    return {
        "name": _name(pool, trace_path),
        "description": f"{trace_path.name} replayed on the LLMServingPool in {pool_path}",
        "profile": profile,
        "coldStart": cold_start,
        "tensorParallelSize": tp,
        "horizonS": horizon,
        "workload": [{"kind": "trace", "path": str(trace_path.resolve())}],
        # The controllers read signals as the pool's Prometheus section says they are scraped.
        "simulation": {
            "scrapeIntervalS": spec.prometheus.scrape_interval_s,
            "windowS": spec.prometheus.window_s,
        },
        "pool": sections,
    }


def write_trace_scenario(out: Path, scenario: dict[str, Any], policy: str) -> Path:
    """`scenario.yaml` in `out`, with how to run it again."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scenario.yaml"
    header = (
        "# Written by `chiron-sim run --trace`: the scenario that ran. Run it again with\n"
        f"#   chiron-sim run {path} --policy {policy} --out DIR\n"
    )
    path.write_text(header + yaml.safe_dump(scenario, sort_keys=False, width=100))
    return path
