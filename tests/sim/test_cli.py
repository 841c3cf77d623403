"""`chiron-sim`: run, bench, sweep and report, end to end on tiny scenarios."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chiron_operator.sim.harness.cli import main
from tests.sim import benchkit


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_run_writes_csvs_summary_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", benchkit.TINY_MIXED, "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "tiny-mixed" and summary["policy"] == "chiron"
    requests = rows(out / "requests.csv")
    assert len(requests) == summary["summary"]["requests"]
    assert {"request_id", "ttft_s", "mean_itl_s", "met_slo", "dropped_reason"} <= set(requests[0])
    ticks = rows(out / "ticks.csv")
    assert len(ticks) == 300 // 15
    assert {"time_s", "desired.mixed", "max_num_seqs.batch", "ready.interactive"} <= set(ticks[0])
    assert any(column.startswith("reason.") for column in ticks[0])
    for name in ("load", "replicas", "batch_sizes", "latency"):
        assert (out / f"{name}.png").stat().st_size > 1000


def test_run_a_baseline_with_its_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", benchkit.TINY_INTERACTIVE, "--out", str(tmp_path), "--no-progress", "--no-plots"]
    assert main([*args, "--policy", "static", "--static-replicas", "2"]) == 0
    assert "tiny-interactive / static" in capsys.readouterr().out
    assert main([*args, "--policy", "llumnix-tuned", "--freeness", "50,100"]) == 0
    assert main([*args, "--set", "global.ibpHighRatio=0.7", "--exact"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step_mode"] == "exact"
    assert summary["policy_spec"]["overrides"] == [["global.ibpHighRatio", 0.7]]


def test_run_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "no-such-scenario", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "no-such-scenario" in capsys.readouterr().err
    args = ["run", benchkit.TINY_INTERACTIVE, "--out", str(tmp_path), "--no-progress"]
    assert main([*args, "--policy", "llumnix-tuned"]) == 2
    assert main([*args, "--policy", "hpa", "--set", "global.ibpHighRatio=0.7"]) == 2


def test_bench_sweep_and_report(tmp_path: Path) -> None:
    bench_json = tmp_path / "bench.json"
    scenarios = f"{benchkit.TINY_INTERACTIVE},{benchkit.TINY_MIXED}"
    argv = ["bench", "--quick", "--json", str(bench_json), "--scenarios", scenarios]
    assert main([*argv, "--jobs", "1", "--no-progress"]) == 0
    document = json.loads(bench_json.read_text())
    assert [s["name"] for s in document["scenarios"]] == ["tiny-interactive", "tiny-mixed"]
    assert "chiron" in document["scenarios"][0]["policies"]
    sweep_json = tmp_path / "sweep.json"
    argv = ["sweep", "--quick", "--json", str(sweep_json), "--scenarios", benchkit.TINY_MIXED,
            "--param", "restart.dwellS=60", "--jobs", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert len(json.loads(sweep_json.read_text())["rows"]) == 2
    report = tmp_path / "docs" / "BENCHMARKS.md"
    notes = tmp_path / "notes.md"
    notes.write_text("Hand-written analysis.\n")
    argv = ["report", "--bench", str(bench_json), "--sweep", str(sweep_json), "--out",
            str(report), "--notes", str(notes)]  # fmt: skip
    assert main(argv) == 0
    text = report.read_text()
    assert "Hand-written analysis." in text and "### Chiron's tunables" in text
    assert (tmp_path / "docs" / "img" / "bench-summary.png").exists()
    assert "](img/bench-tiny-mixed.png)" in text


def test_sweep_adds_generated_scenarios_of_its_own_seed(tmp_path: Path) -> None:
    sweep_json = tmp_path / "sweep.json"
    out_dir = tmp_path / "train"
    argv = ["sweep", "--quick", "--json", str(sweep_json), "--scenarios", benchkit.TINY_MIXED,
            "--generated", "1", "--generated-seed", "7", "--generated-tiny",
            "--generated-dir", str(out_dir), "--param", "restart.dwellS=60", "--jobs", "1",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    document = json.loads(sweep_json.read_text())
    first, generated = document["scenarios"]
    assert first == "tiny-mixed" and generated.startswith("g7-00-")
    assert [p.name for p in out_dir.iterdir()] == [f"{generated}.yaml"]
    runs = {r["scenario"] for row in document["rows"] for r in row["runs"]}
    assert runs == set(document["scenarios"])
    assert main([*argv, "--generated", "-1"]) == 2
