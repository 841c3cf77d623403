"""The benchmark: every scenario of the suite x every policy of the roster (Chiron with its
gateway, Chiron with plain Services, the baselines).

`bench(...)` returns (and the CLI writes) one JSON document:

```
{"scenarios": [{"name", "description", "oracle_gpu_hours", "oracle_peak_instances", ...,
                "policies": {"chiron": {"interactive_slo_attainment", "batch_deadline_attainment",
                                        "gpu_hours", "scaling_actions", "restarts", ...}, ...},
                "hindsight": {"source", "gpu_hours", "interactive_slo_attainment", ...},
                "hindsight_search": {"seed", "lead_s", "rows": [...], "chosen_factor", ...},
                "llumnix_sweep": {"training_seed", "rows": [...], "chosen": {...}},
                "static_sweep": {...}, "series": {...}}],
 "sim_requests_per_wall_s": ..., "seed": ..., "training_seed": ..., "quick": ..., ...}
```

Runs are independent, so they go to a process pool (`jobs`); each worker rebuilds its scenario,
workload and policy from plain values (`runs.RunRequest`), so results do not depend on `jobs`.
The tuned Llumnix and the static count (`static_search`) are chosen per scenario on
`training_seed` and evaluated with everything else on `seed`; the hindsight reference
(`hindsight`) is searched on `seed` itself, since hindsight knows the arrivals it is judged on.
Simulator speed (`sim_requests_per_wall_s`) comes from `speed_probe`, serial runs apart from
the pool (parallel runs share the cores, with each other and with whatever else the machine runs);
`all_runs_requests_per_wall_s` is the same ratio over every run, contention included.
Sweeps of Chiron's own tunables are in `sweep`.

Selection rule of the baselines' sweeps (`runs.choose`): among the configurations whose
interactive SLO and batch deadline attainments both reach the target (99%), the one with the
fewest GPU-hours; when none does, the one with the highest attainment (the lower of the two),
fewer GPU-hours breaking ties.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from chiron_operator.sim.harness.hindsight import hindsight_search, reference
from chiron_operator.sim.harness.oracle import OracleResult
from chiron_operator.sim.harness.policies import (
    HINDSIGHT,
    LLUMNIX_TUNED,
    STATIC,
    PolicySpec,
    llumnix_grid,
    roster,
)
from chiron_operator.sim.harness.runs import (
    EVALUATION_SEED,
    TARGET_ATTAINMENT,
    TRAINING_SEED,
    Progress,
    RunOutcome,
    RunRequest,
    choose,
    oracle_for,
    run_all,
    scenario_at,
    workload_for,
)
from chiron_operator.sim.harness.speed_probe import speed_probe
from chiron_operator.sim.harness.static_search import static_search


def _llumnix_rows(outcomes: Sequence[RunOutcome], path: str) -> list[dict[str, Any]]:
    rows = []
    for o in outcomes:
        freeness = o.request.policy.freeness
        if o.request.scenario_path == path and freeness is not None:
            up, down = freeness
            rows.append(
                {"scale_up_freeness_blocks": up, "scale_down_freeness_blocks": down, **o.metrics}
            )
    return rows


def bench(
    paths: Sequence[str],
    *,
    quick: bool,
    seed: int = EVALUATION_SEED,
    training_seed: int = TRAINING_SEED,
    jobs: int = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The whole benchmark as a JSON-ready document (see the module docstring)."""
    started = time.perf_counter()
    sweep_requests = _llumnix_requests(paths, quick, training_seed)
    sweep_outcomes = run_all(sweep_requests, jobs=jobs, progress=progress)
    statics, static_outcomes = static_search(
        paths, quick=quick, seed=training_seed, jobs=jobs, progress=progress
    )
    sweeps = {path: _llumnix_sweep(sweep_outcomes, path, training_seed) for path in paths}
    oracles, requests = _evaluation(paths, quick, seed, statics, sweeps)
    outcomes = run_all(requests, jobs=jobs, progress=progress)
    hindsights, hindsight_outcomes = hindsight_search(
        paths, quick=quick, seed=seed, jobs=jobs, progress=progress
    )
    scenarios = [
        _scenario_entry(
            path,
            quick,
            seed,
            oracles[path],
            {"llumnix": sweeps[path], "static": statics[path], "hindsight": hindsights[path]},
            outcomes,
        )
        for path in paths
    ]
    totals = _totals([*sweep_outcomes, *static_outcomes, *outcomes, *hindsight_outcomes])
    speed = speed_probe(paths, quick=quick, seed=seed)
    return {
        "scenarios": scenarios,
        "sim_requests_per_wall_s": speed["requests_per_wall_s"],
        "speed_probe": speed,
        **totals,
        "seed": seed,
        "training_seed": training_seed,
        "quick": quick,
        "jobs": jobs,
        "target_attainment": TARGET_ATTAINMENT,
        "bench_wall_s": time.perf_counter() - started,
        "cpu_count": os.cpu_count(),
    }


def _llumnix_requests(paths: Sequence[str], quick: bool, training_seed: int) -> list[RunRequest]:
    """The tuned Llumnix's sweep: every threshold pair of the grid on every scenario."""
    return [
        RunRequest(
            path, quick, PolicySpec(LLUMNIX_TUNED, freeness=f), training_seed, tag=f"{f[0]:g}"
        )
        for path in paths
        for f in llumnix_grid(quick=quick)
    ]


def _evaluation(
    paths: Sequence[str],
    quick: bool,
    seed: int,
    statics: Mapping[str, Mapping[str, Any]],
    sweeps: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, OracleResult], list[RunRequest]]:
    """Each scenario's oracle on `seed`, and the roster's runs there with the trained choices."""
    oracles: dict[str, OracleResult] = {}
    requests: list[RunRequest] = []
    for path in paths:
        scenario = scenario_at(path, quick)
        oracles[path] = oracle_for(scenario, workload_for(path, quick, seed))
        specs = roster(
            scenario,
            static_replicas=statics[path]["chosen_replicas"],
            llumnix_freeness=_chosen_freeness(sweeps[path]),
        )
        requests += [RunRequest(path, quick, spec, seed) for spec in specs]
    return oracles, requests


def _llumnix_sweep(outcomes: Sequence[RunOutcome], path: str, training_seed: int) -> dict[str, Any]:
    """The scenario's tuned-Llumnix sweep record: every row and the index `choose` picks."""
    rows = _llumnix_rows(outcomes, path)
    return {"training_seed": training_seed, "rows": rows, "chosen": choose(rows)}


def _chosen_freeness(sweep: Mapping[str, Any]) -> tuple[float, float]:
    row = sweep["rows"][sweep["chosen"]]
    return row["scale_up_freeness_blocks"], row["scale_down_freeness_blocks"]


def _totals(all_runs: Sequence[RunOutcome]) -> dict[str, Any]:
    """What every run of the bench simulated, and in how much event-loop wall time."""
    simulated = sum(o.metrics["requests"] for o in all_runs)
    wall = sum(o.metrics["wall_s"] for o in all_runs)
    return {
        "simulated_requests": simulated,
        "simulated_wall_s": wall,
        "all_runs_requests_per_wall_s": simulated / wall if wall > 0 else None,
        "runs": len(all_runs),
    }


def _scenario_entry(  # noqa: PLR0917 -- private, one call site
    path: str,
    quick: bool,
    seed: int,
    bound: OracleResult,
    searches: Mapping[str, dict[str, Any]],
    outcomes: Sequence[RunOutcome],
) -> dict[str, Any]:
    """One scenario's record; `searches` holds its llumnix, static and hindsight searches."""
    scenario = scenario_at(path, quick)
    workload = workload_for(path, quick, seed)
    mine = [o for o in outcomes if o.request.scenario_path == path]
    policies = {o.request.policy.label: o.metrics for o in mine}
    hindsight = dict(searches["hindsight"])
    series = {o.request.policy.label: o.series for o in mine}
    series[HINDSIGHT] = hindsight.pop("series")
    return {
        "name": scenario.name,
        "description": scenario.description,
        "profile": scenario.profile,
        "tensor_parallel_size": scenario.tensor_parallel_size,
        "horizon_s": scenario.horizon_s,
        "requests": len(workload),
        "oracle_gpu_hours": bound.gpu_hours,
        "oracle_peak_instances": bound.peak_instances,
        "oracle_floor_instances": bound.floor_instances,
        "oracle_series": {
            "bin_s": bound.bin_s,
            "instances": [
                i + b
                for i, b in zip(bound.interactive_instances, bound.batch_instances, strict=True)
            ],
        },
        "policies": policies,
        "series": series,
        "hindsight": reference(hindsight, policies.get(STATIC)),
        "hindsight_search": hindsight,
        "llumnix_sweep": searches["llumnix"],
        "static_sweep": searches["static"],
    }
