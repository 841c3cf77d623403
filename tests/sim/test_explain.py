"""`explain`: which scenarios Chiron lost and to whom, and the side-by-side figure of both runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from chiron_operator.sim.harness.cli import main
from chiron_operator.sim.harness.explain import (
    Loss,
    explain,
    explain_section,
    losses,
    rival_spec,
)
from chiron_operator.sim.harness.policies import HINDSIGHT, LLUMNIX_TUNED, STATIC
from tests.sim import benchkit


def metrics(interactive: float, gpu_hours: float) -> dict[str, Any]:
    return {
        "interactive_slo_attainment": interactive,
        "batch_deadline_attainment": None,
        "gpu_hours": gpu_hours,
    }


def scenario(name: str, policies: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "policies": policies, "hindsight": reference}


def test_a_loss_is_to_the_cheapest_baseline_at_equal_attainment_else_to_hindsight() -> None:
    document = {
        "scenarios": [
            # A baseline reaches Chiron's attainment for less: it is the rival.
            scenario(
                "cheaper-baseline",
                {
                    "chiron": metrics(0.995, 6.0),
                    "chiron-services": metrics(0.999, 1.0),  # Chiron too: never the rival
                    "static": metrics(0.996, 5.0),
                    "keda": metrics(0.999, 9.0),
                },
                metrics(0.99, 4.0),
            ),
            # No baseline does, but Chiron misses 99%: measured against the reference.
            scenario(
                "short",
                {"chiron": metrics(0.95, 3.0), "static": metrics(0.9, 2.0)},
                metrics(0.99, 4.0),
            ),
            # Chiron reaches 99% and costs no more than the reference: no loss.
            scenario("won", {"chiron": metrics(0.995, 3.0)}, metrics(0.991, 3.5)),
        ]
    }
    found = losses(document, {"cheaper-baseline": "a.yaml", "short": "b.yaml", "won": "c.yaml"})
    assert [(f.scenario, f.rival) for f in found] == [
        ("cheaper-baseline", STATIC),
        ("short", HINDSIGHT),
    ]
    assert "static reaches 99.60% for 5.00 GPU-h" in found[0].why


def test_the_rival_is_rebuilt_with_the_parameters_the_bench_chose() -> None:
    document = benchkit.tiny_bench()
    entry = document["scenarios"][0]
    path = {"tiny-mixed": benchkit.TINY_MIXED, "tiny-interactive": benchkit.TINY_INTERACTIVE}
    loss = Loss(entry["name"], path[entry["name"]], LLUMNIX_TUNED, "")
    sweep = entry["llumnix_sweep"]
    row = sweep["rows"][sweep["chosen"]]
    chosen = (row["scale_up_freeness_blocks"], row["scale_down_freeness_blocks"])
    assert rival_spec(document, loss).freeness == chosen
    reference = rival_spec(document, Loss(entry["name"], loss.path, HINDSIGHT, ""))
    assert reference.factor == entry["hindsight_search"]["chosen_factor"] and reference.schedule


def test_explain_draws_one_figure_per_loss(tmp_path: Path) -> None:
    document = copy.deepcopy(benchkit.tiny_bench())  # shared by other tests: never mutated
    paths = {"tiny-mixed": benchkit.TINY_MIXED, "tiny-interactive": benchkit.TINY_INTERACTIVE}
    # Make a loss certain whatever the tiny runs gave: the reference costs nothing.
    for entry in document["scenarios"]:
        entry["hindsight"] = {**entry["hindsight"], "gpu_hours": 0.0}
    made = explain(document, paths, tmp_path)
    assert {loss.scenario for loss, _ in made} == set(paths)
    for _, figure in made:
        assert figure.stat().st_size > 10_000
    section = explain_section(made, tmp_path)
    assert any(line.startswith("![tiny-mixed](explain-tiny-mixed.png)") for line in section)


def test_the_command_reads_a_bench_file_and_names_each_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = copy.deepcopy(benchkit.tiny_bench())
    for entry in document["scenarios"]:
        entry["hindsight"] = {**entry["hindsight"], "gpu_hours": 0.0}
    bench_path = tmp_path / "bench.json"
    bench_path.write_text(json.dumps(document))
    files = [f"--scenario-file={p}" for p in (benchkit.TINY_MIXED, benchkit.TINY_INTERACTIVE)]
    status = main(["explain", "--bench", str(bench_path), "--out-dir", str(tmp_path), *files])
    assert status == 0
    printed = capsys.readouterr().out
    assert "tiny-mixed: chiron" in printed and "explain-tiny-interactive.png" in printed
