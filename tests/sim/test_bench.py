"""The benchmark: its JSON, selection rules, searches, determinism and the quick suite's speed."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from chiron_operator.sim.config import StepMode
from chiron_operator.sim.harness import runs as benchmod
from chiron_operator.sim.harness.policies import BASELINES, ROSTER, PolicySpec
from chiron_operator.sim.harness.report import attainment, best_baseline_at, goals, render
from chiron_operator.sim.harness.runs import RunRequest, choose, run_all, simulate_request
from chiron_operator.sim.harness.static_search import static_search
from chiron_operator.sim.harness.sweep import SweepParam, parse_param, sweep_chiron, sweep_configs
from tests.sim import benchkit

POLICY_KEYS = {
    "interactive_slo_attainment",
    "batch_deadline_attainment",
    "gpu_hours",
    "scaling_actions",
    "restarts",
}


def row(interactive: float | None, batch: float | None, gpu_hours: float) -> dict[str, Any]:
    return {
        "interactive_slo_attainment": interactive,
        "batch_deadline_attainment": batch,
        "gpu_hours": gpu_hours,
    }


def check_document(document: dict[str, Any], names: set[str]) -> None:
    """The shape the issue asks for, plus what the report reads."""
    assert {s["name"] for s in document["scenarios"]} == names
    assert document["sim_requests_per_wall_s"] > 0
    for scenario in document["scenarios"]:
        assert scenario["oracle_gpu_hours"] > 0
        assert set(scenario["policies"]) == set(ROSTER)
        for metrics in scenario["policies"].values():
            assert set(metrics) >= POLICY_KEYS
            for key in ("interactive_slo_attainment", "batch_deadline_attainment"):
                value = metrics[key]
                assert value is None or 0.0 <= value <= 1.0
        sweep = scenario["llumnix_sweep"]
        assert sweep["training_seed"] != document["seed"]
        assert 0 <= sweep["chosen"] < len(sweep["rows"])
        statics = scenario["static_sweep"]
        assert statics["chosen_replicas"] in {r["replicas"] for r in statics["rows"]}
        search = scenario["hindsight_search"]
        assert search["seed"] == document["seed"]  # hindsight knows the evaluated arrivals
        assert search["chosen_factor"] in {r["factor"] for r in search["rows"]}
        reference = scenario["hindsight"]
        assert reference["source"] in {"schedule", "static"}
        if reference["reached_target"]:
            assert attainment(reference) >= benchmod.TARGET_ATTAINMENT
        assert "hindsight" in scenario["series"]


def test_tiny_bench_document() -> None:
    document = benchkit.tiny_bench()
    check_document(document, {"tiny-mixed", "tiny-interactive"})
    tiny = next(s for s in document["scenarios"] if s["name"] == "tiny-interactive")
    assert tiny["policies"]["chiron"]["batch_deadline_attainment"] is None  # no batch class
    chosen = tiny["llumnix_sweep"]["rows"][tiny["llumnix_sweep"]["chosen"]]
    assert tiny["policies"]["llumnix-tuned"]["policy"] == "llumnix-tuned"
    assert chosen["scale_up_freeness_blocks"] < chosen["scale_down_freeness_blocks"]


def test_the_report_renders_every_scenario_goal_and_sweep() -> None:
    document = benchkit.tiny_bench()
    text = render(document, image_paths={"summary": "img/s.png", "tiny-mixed": "a.png",
                                         "tiny-interactive": "b.png"})  # fmt: skip
    for fragment in ("## Goals", "### tiny-mixed", "### tiny-interactive", "Tuned Llumnix",
                     "Static provisioning", "Hindsight reference", "requests per wall second",
                     "**chiron**", "**chiron-services**", "*hindsight reference"):  # fmt: skip
        assert fragment in text
    verdicts = goals(document)
    assert {g.goal for g in verdicts} >= {
        "interactive SLO attainment",
        "batch deadline attainment",
        "GPU-hours / hindsight reference",
        "GPU-hours / best baseline at equal attainment",
        "simulator speed (fast mode)",
    }


def test_best_baseline_at_equal_attainment() -> None:
    policies = {
        "chiron": row(0.995, None, 5.0),
        "chiron-services": row(0.999, None, 6.0),  # Chiron too: never the baseline
        "static": row(0.999, None, 12.0),
        "keda": row(0.995, None, 9.0),
        "hpa": row(0.90, None, 2.0),
    }
    assert best_baseline_at(policies, 0.995, "chiron") == ("keda", 9.0)
    assert best_baseline_at(policies, 0.9999, "chiron") is None
    assert best_baseline_at(policies, 0.995, "keda") == ("static", 12.0)


def test_goal_verdicts_say_by_how_much() -> None:
    document = {
        "sim_requests_per_wall_s": 40_000.0,
        "scenarios": [
            {
                "name": "s",
                "oracle_gpu_hours": 2.0,
                "hindsight": {"source": "schedule", "reached_target": True, **row(1, 1, 2.0)},
                "policies": {"chiron": row(0.985, 1.0, 3.0), "static": row(0.99, 1.0, 4.0)},
            },
            {
                "name": "no-batch",
                "oracle_gpu_hours": 2.0,
                "hindsight": {"source": "static", "reached_target": False, **row(0.9, None, 5)},
                "policies": {"chiron": row(0.995, None, 4.5), "kpa": row(0.996, None, 5.0)},
            },
        ],
    }
    verdicts = goals(document)
    by_goal = {g.goal: g for g in verdicts if g.scenario == "s"}
    assert by_goal["interactive SLO attainment"].met is False
    assert by_goal["interactive SLO attainment"].gap == "0.50 points short"
    assert by_goal["batch deadline attainment"].met is True
    assert by_goal["GPU-hours / hindsight reference"].measured == "1.50x (schedule)"
    assert by_goal["GPU-hours / hindsight reference"].gap == "+25% over"
    # With batch work present the goal is 0.6x: 0.75x misses it.
    against = by_goal["GPU-hours / best baseline at equal attainment"]
    assert (against.measured, against.met, against.gap) == ("0.75x (static)", False, "+25% over")
    assert next(g for g in verdicts if g.goal.startswith("simulator")).met is False
    plain = {g.goal: g for g in verdicts if g.scenario == "no-batch"}
    # Without batch work 1.0x is the goal: 0.90x meets it.
    assert plain["GPU-hours / best baseline at equal attainment"].met is True
    # A reference that misses the target is no yardstick: not applicable, and said so.
    assert plain["GPU-hours / hindsight reference"].met is None
    assert "misses" in plain["GPU-hours / hindsight reference"].measured


def test_choose_prefers_the_cheapest_at_target_else_the_best_attainment() -> None:
    rows = [row(0.999, None, 9.0), row(0.991, 0.995, 4.0), row(0.98, None, 1.0)]
    assert choose(rows) == 1
    short = [row(0.95, None, 9.0), row(0.97, 0.96, 4.0), row(0.96, None, 2.0)]
    assert choose(short) == 2  # 0.96 is the best reachable; cheaper than the other 0.96


def test_parse_param_and_sweep_configs() -> None:
    param = parse_param("global.ibpHighRatio=0.7,0.9")
    assert param == SweepParam("global.ibpHighRatio", (0.7, 0.9))
    assert parse_param("restart.maxRestartsPerHour=2,4").values == (2, 4)
    with pytest.raises(ValueError, match="PATH=V1"):
        parse_param("global.ibpHighRatio")
    other = SweepParam("restart.dwellS", (60,))
    assert sweep_configs([param, other], grid=False) == [
        (),
        (("global.ibpHighRatio", 0.7),),
        (("global.ibpHighRatio", 0.9),),
        (("restart.dwellS", 60),),
    ]
    assert len(sweep_configs([param, other], grid=True)) == 2


def test_runs_are_deterministic_and_independent_of_workers() -> None:
    requests = [
        RunRequest(benchkit.TINY_MIXED, True, PolicySpec("chiron"), 0),
        RunRequest(benchkit.TINY_MIXED, True, PolicySpec("kpa"), 0),
    ]
    serial = run_all(requests, jobs=1)
    parallel = run_all(requests, jobs=2)
    for a, b in zip(serial, parallel, strict=True):
        strip = {k: v for k, v in a.metrics.items() if k != "wall_s"}
        assert strip == {k: v for k, v in b.metrics.items() if k != "wall_s"}
        assert a.series == b.series
    again = simulate_request(requests[0])
    assert again.requests == simulate_request(requests[0]).requests


def test_fast_and_exact_modes_agree_on_a_tiny_scenario() -> None:
    fast = simulate_request(RunRequest(benchkit.TINY_INTERACTIVE, False, PolicySpec("chiron"), 0))
    exact = simulate_request(
        RunRequest(benchkit.TINY_INTERACTIVE, False, PolicySpec("chiron"), 0, StepMode.EXACT)
    )
    assert fast.summary.completed == exact.summary.completed
    assert fast.summary.gpu_hours == pytest.approx(exact.summary.gpu_hours, rel=1e-6)
    assert fast.summary.interactive_slo_attainment == pytest.approx(
        exact.summary.interactive_slo_attainment, abs=0.02
    )


def test_overrides_of_the_control_interval_and_slo_reach_the_simulator() -> None:
    def run(*overrides: tuple[str, object]) -> Any:
        spec = PolicySpec("chiron", overrides=tuple(overrides))
        return simulate_request(RunRequest(benchkit.TINY_MIXED, True, spec, 0))

    base = run()
    slower = run(("control.intervalS", base.config.control_interval_s * 3))
    assert slower.config.control_interval_s == base.config.control_interval_s * 3
    assert len(slower.ticks) < len(base.ticks)
    strict = run(("slo.interactiveTtftS", 0.001))
    assert strict.config.slo.interactive_ttft_s == 0.001
    assert strict.summary.interactive_slo_attainment < base.summary.interactive_slo_attainment


def test_static_search_finds_the_fewest_instances_reaching_the_target() -> None:
    records, outcomes = static_search([benchkit.TINY_INTERACTIVE], quick=False, seed=1)
    record = records[benchkit.TINY_INTERACTIVE]
    by_count = {r["replicas"]: r for r in record["rows"]}
    chosen = record["chosen_replicas"]
    assert len(outcomes) == len(record["rows"])
    if record["reached_target"]:
        assert attainment(by_count[chosen]) >= benchmod.TARGET_ATTAINMENT
        below = by_count.get(chosen - 1)
        assert below is None or attainment(below) < benchmod.TARGET_ATTAINMENT
    else:
        assert chosen == max(by_count)


def test_chiron_sweep_scores_each_override_set() -> None:
    document = sweep_chiron(
        [benchkit.TINY_MIXED],
        [SweepParam("global.ibpHighRatio", (0.9,)), SweepParam("global.ibpLowRatio", (0.95,))],
        quick=True,
        seeds=(1,),
    )
    rows = document["rows"]
    assert [r["overrides"] for r in rows] == [
        {},
        {"global.ibpHighRatio": 0.9},
        {"global.ibpLowRatio": 0.95},
    ]
    assert "invalid" in rows[2]  # low above high: the pool's own rules reject it
    assert document["best"] in (0, 1)
    for r in rows[:2]:
        assert len(r["runs"]) == 1 and r["runs"][0]["oracle_ratio"] > 0


@pytest.mark.slow
def test_quick_bench_covers_the_suite() -> None:
    # How long it takes is measured by `make bench`, not asserted here: a shared CI machine
    # would make a time limit a test of the machine.
    document = benchkit.quick_bench()
    check_document(document, {Path(p).stem for p in benchmod.suite_paths()})
    assert document["quick"] and document["jobs"] == 2
    for scenario in document["scenarios"]:
        for name in BASELINES:
            assert name in scenario["policies"]
        assert not math.isnan(scenario["oracle_gpu_hours"])


def test_policy_spec_is_plain_data() -> None:
    spec = PolicySpec("llumnix-tuned", freeness=(50.0, 100.0))
    assert dataclasses.asdict(spec)["freeness"] == (50.0, 100.0)
