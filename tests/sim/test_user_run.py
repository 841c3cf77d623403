"""`chiron-sim run --trace --pool` and `chiron-sim bench --scenario-file`: a user's own traffic.

The traces are written by the tests (a few minutes of traffic, so runs take about a second);
the pools are the repository's example manifests, as a user would bring theirs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chiron_operator.sim.harness import user_run
from chiron_operator.sim.harness.cli import main
from chiron_operator.sim.harness.policies import PolicySpec, setup
from chiron_operator.sim.scenario import Scenario, build_workload, load_scenario
from tests.sim import benchkit

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
MIXED_POOL = EXAMPLES / "mixed-interactive-batch.yaml"


def small_trace(directory: Path, *, minutes: float = 3.0, seed: int = 0) -> Path:
    """Chat at ~3 requests/s for `minutes`, then 30 batch requests due within 5 minutes."""
    rng = np.random.default_rng(seed)
    span_s = 60.0 * minutes
    arrivals = np.sort(rng.uniform(0.0, span_s, round(3 * span_s)))
    lines = ["arrival_s,prompt_tokens,output_tokens,class,deadline_s"]
    lines += [f"{t:.3f},{rng.integers(50, 1500)},{rng.integers(10, 300)},," for t in arrivals]
    lines += [f"{span_s:.3f},{rng.integers(500, 3000)},{rng.integers(50, 300)},batch,300"] * 30
    path = directory / "traffic.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_args(trace: Path, out: Path, pool: Path = MIXED_POOL) -> list[str]:
    return ["run", "--trace", str(trace), "--pool", str(pool), "--out", str(out), "--no-progress"]


def test_run_a_trace_on_the_example_pool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(run_args(small_trace(tmp_path), out)) == 0
    assert "llama-8b / chiron: interactive SLO" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "llama-8b" and summary["policy"] == "chiron"
    classes = summary["classes"]
    assert classes["interactive"]["requests"] == 540 and classes["batch"]["requests"] == 30
    for attainment in (
        classes["interactive"]["slo_attainment"],
        classes["batch"]["deadline_attainment"],
    ):
        assert 0.0 <= attainment <= 1.0
    assert summary["summary"]["gpu_hours"] > 0 and summary["oracle_gpu_hours"] > 0
    assert summary["horizon_s"] == 180 + user_run.TAIL_S  # the last arrival, then the tail
    for event in summary["scale_events"]:
        assert event["what"] in {"replicas", "max_num_seqs"} and event["reason"]
        assert event["from"] != event["to"]
    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert len(decisions) == summary["horizon_s"] // 15  # one per control tick (intervalS 15)
    assert set(decisions[0]["reasons"]) >= {"interactive.replicas", "batch.max_num_seqs"}
    assert set(decisions[0]["desired"]) == {"interactive", "mixed", "batch"}
    for name in ("load", "replicas", "batch_sizes", "latency"):
        assert (out / f"{name}.png").stat().st_size > 1000
    again = load_scenario(out / "scenario.yaml")  # what ran, to edit and run again
    assert again.name == "llama-8b" and again.workload[0].kind == "trace"


def test_the_run_uses_the_pools_tuning_as_the_operator_builds_it(tmp_path: Path) -> None:
    pool, root = user_run.load_pool(MIXED_POOL)
    data = user_run.trace_scenario(small_trace(tmp_path), MIXED_POOL, (pool, root))
    scenario = Scenario.model_validate(data)
    chosen = setup(scenario, PolicySpec(user_run.default_policy(pool)))
    assert chosen.name == "chiron"  # the example pool runs its gateway
    assert chosen.policy.tuning == pool.spec.to_tuning()
    assert scenario.control_interval_s == pool.spec.control.interval_s
    assert len(build_workload(scenario)) == 540 + 30


def test_a_pool_without_its_gateway_runs_chiron_behind_services(tmp_path: Path) -> None:
    manifest = tmp_path / "no-gateway.yaml"
    manifest.write_text(MIXED_POOL.read_text() + "  gateway: {enabled: false}\n")
    pool, root = user_run.load_pool(manifest)
    assert user_run.default_policy(pool) == "chiron-services"
    scenario = Scenario.model_validate(
        user_run.trace_scenario(small_trace(tmp_path), manifest, (pool, root))
    )
    chosen = setup(scenario, PolicySpec(user_run.default_policy(pool)))
    assert chosen.policy.tuning == pool.spec.to_tuning()  # no fast path without the gateway


def test_the_profile_must_fit_the_pools_pods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = EXAMPLES / "llama-70b-tp4.yaml"
    assert main(run_args(small_trace(tmp_path), tmp_path / "out", pool)) == 2
    err = capsys.readouterr().err
    line = next(
        n for n, text in enumerate(pool.read_text().splitlines(), 1) if "tensorParallelSize" in text
    )
    assert (
        f"{pool}:{line}:" in err and "--profile (llama2-70b-a100-tp4, llama2-70b-h100-tp4)" in err
    )


POOL_HEAD = """\
apiVersion: chiron.io/v1alpha1
kind: LLMServingPool
metadata: {name: broken}
spec:
  model: m
  template: {image: vllm/vllm-openai:v0.11.0}
  prometheus: {url: http://prometheus:9090}
"""


def _bad_files(directory: Path) -> dict[str, Path]:
    files = {
        "negative.csv": "arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,-10,5\n",
        "unsorted.csv": "arrival_s,prompt_tokens,output_tokens\n5,10,5\n1,10,5\n",
        "empty.csv": "",
        "typo.yaml": POOL_HEAD + "  roles: {mixed: {minReplica: 1}}\n",
        "bounds.yaml": POOL_HEAD + "  roles:\n    mixed: {minReplicas: 3, maxReplicas: 2}\n",
        "syntax.yaml": "apiVersion: chiron.io/v1alpha1\nkind: [LLMServingPool\n",
    }
    for name, text in files.items():
        (directory / name).write_text(text)
    return {name: directory / name for name in files}


@pytest.mark.parametrize(
    ("trace", "pool", "expected"),
    [
        ("negative.csv", None, "negative.csv:3:3: prompt_tokens -10 is negative"),
        ("unsorted.csv", None, "unsorted.csv:3:1: arrival_s '1' is earlier than"),
        ("empty.csv", None, "empty.csv:1:1: empty file"),
        (None, "syntax.yaml", "syntax.yaml:3:1: invalid YAML: "),
        (None, "typo.yaml", "typo.yaml:8:19: spec.roles.mixed.minReplica: unknown field"),
        (
            None,
            "bounds.yaml",
            "bounds.yaml:9:26: spec.roles.mixed.minReplicas (3) must be <= spec.roles.mixed.",
        ),
    ],
)
def test_a_bad_file_is_named_with_its_line_and_column_and_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    trace: str | None,
    pool: str | None,
    expected: str,
) -> None:
    files = _bad_files(tmp_path)
    trace_path = files[trace] if trace else small_trace(tmp_path)
    pool_path = files[pool] if pool else MIXED_POOL
    assert main(run_args(trace_path, tmp_path / "out", pool_path)) == 2
    err = capsys.readouterr().err
    assert f"chiron-sim: error: {tmp_path}/{expected}" in err
    assert "Traceback" not in err


def test_the_command_itself_exits_2_without_a_traceback(tmp_path: Path) -> None:
    files = _bad_files(tmp_path)
    argv = run_args(files["negative.csv"], tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-m", "chiron_operator.sim.harness.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"chiron-sim: error: {files['negative.csv']}:3:3: prompt_tokens -10 is negative"
    )


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "--trace", "t.csv", "--out", "o"], "--trace needs --pool"),
        (["run", "x.yaml", "--pool", "p.yaml", "--out", "o"], "--pool goes with --trace"),
        (["run", "--out", "o"], "run needs a SCENARIO, or --trace"),
        (["bench", "--json", "j", "--scenario-file", "nowhere.yaml"], "nowhere.yaml: no such"),
    ],
)
def test_missing_pieces_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_bench_on_a_scenario_file_writes_the_suites_json_shape(tmp_path: Path) -> None:
    trace = small_trace(tmp_path, minutes=2.0)
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "name: my-traffic\nprofile: llama31-8b-a100\ncoldStart: 20\nhorizonS: 300\n"
        f"workload: [{{kind: trace, path: {trace.name}}}]\n"
        "pool:\n  slo: {batchDeadlineS: 240}\n  roles:\n"
        "    {interactive: {maxReplicas: 2}, mixed: {maxReplicas: 1}, batch: {maxReplicas: 1}}\n"
    )
    bench_json = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--json", str(bench_json), "--scenario-file", str(mine)]
    assert main([*argv, "--jobs", "1", "--no-progress"]) == 0
    document = json.loads(bench_json.read_text())
    assert [s["name"] for s in document["scenarios"]] == ["my-traffic"]
    suite = benchkit.quick_bench()
    assert _shape(document) == _shape(suite)


def _shape(document: dict[str, Any]) -> dict[str, Any]:
    """The keys of a bench document, its scenarios, their policies and their records."""
    scenario = document["scenarios"][0]
    return {
        "top": set(document),
        "speed_probe": set(document["speed_probe"]),
        "scenario": set(scenario),
        "policies": set(scenario["policies"]),
        "metrics": {frozenset(m) for m in scenario["policies"].values()},
        "series": {frozenset(s) for s in scenario["series"].values()},
        "llumnix_sweep": set(scenario["llumnix_sweep"]),
        "static_sweep": set(scenario["static_sweep"]),
    }


def test_bench_stops_at_a_bad_scenario_file_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _bad_files(tmp_path)
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "name: my-traffic\nprofile: llama31-8b-a100\nhorizonS: 300\n"
        f"workload: [{{kind: trace, path: {files['unsorted.csv'].name}}}]\n"
    )
    argv = ["bench", "--json", str(tmp_path / "b.json"), "--scenario-file", str(mine)]
    assert main(argv) == 2
    assert f"{files['unsorted.csv']}:3:1: arrival_s '1' is earlier" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_bench_refuses_two_scenarios_of_one_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (benchkit.DATA / "tiny-mixed.yaml").read_text()
    copies = [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    for copy in copies:
        copy.write_text(text)
    argv = ["bench", "--json", str(tmp_path / "b.json")]
    assert main([*argv, "--scenario-file", str(copies[0]), "--scenario-file", str(copies[1])]) == 2
    assert "two scenarios named 'tiny-mixed'" in capsys.readouterr().err


def test_the_pools_prometheus_windows_are_how_the_run_reads_its_signals(tmp_path: Path) -> None:
    manifest = tmp_path / "slow-scrapes.yaml"
    text = MIXED_POOL.read_text()
    assert "  prometheus:\n" in text
    manifest.write_text(
        text.replace(
            "  prometheus:\n", "  prometheus:\n    windowS: 120\n    scrapeIntervalS: 30\n"
        )
    )
    pool, root = user_run.load_pool(manifest)
    scenario = Scenario.model_validate(
        user_run.trace_scenario(small_trace(tmp_path), manifest, (pool, root))
    )
    assert (scenario.simulation.window_s, scenario.simulation.scrape_interval_s) == (120, 30)
    chosen = setup(scenario, PolicySpec(user_run.default_policy(pool)))
    assert chosen.policy.tuning == pool.spec.to_tuning()  # windows included
