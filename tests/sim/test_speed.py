"""The speed benchmark's plumbing, on a thinned trace (the real figures come from `main`)."""

from __future__ import annotations

import pytest

from chiron_operator.sim.harness import speed


def test_measure_keeps_the_fastest_run_and_counts_requests() -> None:
    workload = speed.conv_workload(0.02)
    m = speed.measure("tiny", workload, repeats=2)
    assert len(m.walls_s) == 2
    assert m.best_wall_s == min(m.walls_s) > 0.0
    assert m.requests == len(workload) > 100
    assert m.requests_per_s == pytest.approx(len(workload) / m.best_wall_s)
    assert m.events_per_request > 1.0  # an arrival and at least one boundary each
    assert "tiny" in speed.report_line(m)


def test_a_run_completes_the_whole_thinned_trace() -> None:
    result = speed.run_once(speed.conv_workload(0.02))
    assert result.summary.completed == result.summary.requests


def test_main_prints_one_line_per_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert speed.main(["--repeats", "1", "--rates", "0.01", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "conv x0.01" in out
    assert "conv x0.02" in out
    assert out.count("requests/s") == 2
