"""The robustness table: win/loss at equal attainment on hand-written documents, and a tiny
end-to-end run of `chiron-sim robustness` and its report section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chiron_operator.sim.harness.cli import main
from chiron_operator.sim.harness.policies import ROSTER
from chiron_operator.sim.harness.report import render
from chiron_operator.sim.harness.report_robustness import robustness_section
from chiron_operator.sim.harness.robustness import compare, robustness_rows, summarise
from chiron_operator.sim.scenario import load_scenario


def run(interactive: float | None, batch: float | None, gpu_hours: float) -> dict[str, Any]:
    return {
        "interactive_slo_attainment": interactive,
        "batch_deadline_attainment": batch,
        "gpu_hours": gpu_hours,
    }


@pytest.mark.parametrize(
    ("mine", "theirs", "expected"),
    [
        (run(0.99, None, 4.0), run(0.99, None, 5.0), "win"),  # as good, cheaper
        (run(0.995, None, 5.0), run(0.99, None, 5.0), "win"),  # better, as cheap
        (run(0.995, 1.0, 4.0), run(0.99, 1.0, 5.0), "win"),  # better and cheaper
        (run(0.99, None, 5.0), run(0.99, None, 4.0), "loss"),
        (run(0.98, None, 5.0), run(0.99, None, 5.0), "loss"),
        (run(0.99, None, 5.0), run(0.99, None, 5.0), "tie"),
        (run(0.99, None, 5.0), run(0.99002, None, 5.004), "tie"),  # within the tolerances
        (run(0.999, None, 6.0), run(0.99, None, 5.0), "incomparable"),  # better, dearer
        (run(0.9, None, 2.0), run(0.99, None, 5.0), "incomparable"),  # worse, cheaper
        # Attainment is the lower class: perfect interactive does not hide missed deadlines.
        (run(1.0, 0.5, 4.0), run(0.9, 0.9, 5.0), "incomparable"),
        (run(1.0, 0.95, 4.0), run(0.99, 0.9, 5.0), "win"),
    ],
)
def test_compare_at_equal_attainment(
    mine: dict[str, Any], theirs: dict[str, Any], expected: str
) -> None:
    assert compare(mine, theirs) == expected
    reverse = {"win": "loss", "loss": "win"}.get(expected, expected)
    assert compare(theirs, mine) == reverse


def scenario(
    name: str, policies: dict[str, dict[str, Any]], reference: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "profile": "llama31-8b-a100",
        "requests": 1000,
        "policies": policies,
        "hindsight": reference,
    }


def reference(gpu_hours: float, *, reached: bool) -> dict[str, Any]:
    return {
        "source": "schedule",
        "reached_target": reached,
        "gpu_hours": gpu_hours,
        "interactive_slo_attainment": 0.995 if reached else 0.9,
        "batch_deadline_attainment": None,
    }


def hand_document() -> dict[str, Any]:
    """Two scenarios: Chiron beats both baselines on the first, loses to static on the second
    (where nobody reaches 99%, and the reference misses it too)."""
    first = scenario(
        "easy",
        {
            "chiron": run(0.995, 1.0, 4.0),
            "chiron-services": run(0.99, 0.99, 6.0),
            "static": run(0.995, 1.0, 8.0),
            "hpa": run(0.5, 0.2, 1.0),
        },
        reference(3.2, reached=True),
    )
    second = scenario(
        "hard",
        {
            "chiron": run(0.90, None, 10.0),
            "chiron-services": run(0.95, None, 10.0),
            "static": run(0.97, None, 9.0),
            "hpa": run(0.90, None, 10.0),
        },
        reference(4.0, reached=False),
    )
    return {
        "scenarios": [first, second],
        "seed": 0,
        "training_seed": 1,
        "runs": 8,
        "bench_wall_s": 1.0,
        "jobs": 1,
        "generated": {
            "count": 2,
            "seed": 5,
            "out_dir": "gen",
            "features": {
                name: {
                    "context": "short",
                    "long_share": 0.0,
                    "batch": name == "easy",
                    "backlogs": [500] if name == "easy" else [],
                    "deadline_scale": "short" if name == "easy" else None,
                    "horizon_s": 3600.0,
                    "peak_trough_ratio": 3.0,
                    "bursts": 1,
                }
                for name in ("easy", "hard")
            },
        },
    }


def test_rows_on_a_hand_written_document() -> None:
    rows = {row.policy: row for row in robustness_rows(hand_document())}
    assert list(rows) == ["chiron", "chiron-services", "static", "hpa"]
    chiron = rows["chiron"]
    # easy: wins against static (as good, half the GPU-hours), incomparable with hpa (better,
    # dearer); hard: loses to static (worse, dearer), ties hpa.
    assert chiron.outcomes == {
        "static": {"win": 1, "loss": 1, "tie": 0, "incomparable": 0},
        "hpa": {"win": 0, "loss": 0, "tie": 1, "incomparable": 1},
    }
    assert chiron.totals() == {"win": 1, "loss": 1, "tie": 1, "incomparable": 1}
    assert (chiron.at_target, chiron.reachable) == (1, 1)  # only "easy" is reachable
    assert chiron.worst_gap is not None
    assert chiron.worst_gap.scenario == "hard"
    assert chiron.worst_gap.value == pytest.approx(0.07)  # static's 97% against Chiron's 90%
    assert chiron.no_baseline_reaches == 0
    assert chiron.worst_baseline_ratio is not None
    assert chiron.worst_baseline_ratio.scenario == "hard"
    assert chiron.worst_baseline_ratio.value == pytest.approx(10.0 / 9.0)
    # The reference misses 99% on "hard": only "easy" counts, 4.0 / 3.2.
    assert chiron.worst_hindsight_ratio is not None
    assert chiron.worst_hindsight_ratio.value == pytest.approx(1.25)
    # chiron-services is not a baseline: nobody is compared with it.
    assert "chiron-services" not in chiron.outcomes
    # static on "easy" is matched only by itself: no baseline reaches 99.5% besides it.
    assert rows["static"].no_baseline_reaches == 2
    assert rows["hpa"].worst_gap is not None
    assert rows["hpa"].worst_gap.value == pytest.approx(0.79)  # 0.2 against 99% (capped)


def test_scenarios_only_the_static_pool_reaches_are_counted_apart() -> None:
    """The static count is chosen on the scenario's own training seed and starts at its peak:
    a scenario only it reaches counts for "any policy", not for "any autoscaler"."""
    document = hand_document()
    hard = document["scenarios"][1]
    hard["policies"]["static"] = run(0.995, None, 9.0)
    chiron = {row.policy: row for row in robustness_rows(document)}["chiron"]
    assert (chiron.at_target, chiron.reachable) == (1, 2)
    assert (chiron.at_target_autoscaled, chiron.reachable_autoscaled) == (1, 1)
    hard["policies"]["hpa"] = run(0.995, None, 20.0)  # an autoscaler reaches it too
    chiron = {row.policy: row for row in robustness_rows(document)}["chiron"]
    assert (chiron.at_target_autoscaled, chiron.reachable_autoscaled) == (1, 2)
    text = "\n".join(robustness_section(document))
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert rows["| easy"].endswith("| 3 of 4 (2) |")  # chiron, chiron-services and static
    assert rows["| hard"].endswith("| 2 of 4 (1) |")  # static and hpa


def test_summary_and_section_from_a_hand_written_document() -> None:
    document = hand_document()
    summary = summarise(document)
    assert summary["scenarios"] == 2
    assert summary["policies"]["chiron"]["totals"]["win"] == 1
    json.dumps(summary)  # JSON-ready
    text = "\n".join(robustness_section(document))
    assert "## Robustness on generated scenarios" in text
    assert (
        "| **chiron** | 1 / 1 / 1 / 1 | 1 of 1 | 1 of 1 | 7.00 points (hard) | 1.11x (hard) "
        in text
    )
    assert "| chiron | 1 / 1 / 0 / 0 | 0 / 0 / 1 / 1 |" in text  # head to head
    assert "| easy | llama31-8b-a100 | 1.0 h, 3.0x, 1 | short | 500 in 1, short deadlines" in text
    assert "1.25x |" in text and "2.50x (misses)" in text


def test_end_to_end_tiny_run_and_report(tmp_path: Path) -> None:
    out = tmp_path / "robustness.json"
    argv = ["robustness", "--count", "2", "--seed", "4", "--tiny", "--json", str(out)]
    assert main([*argv, "--jobs", "2", "--no-progress"]) == 0
    document = json.loads(out.read_text())
    names = [s["name"] for s in document["scenarios"]]
    assert len(names) == 2
    assert document["generated"]["seed"] == 4
    for name in names:
        path = Path(document["generated"]["files"][name])
        assert path.parent == tmp_path / "generated"
        assert load_scenario(path).name == name
        assert set(document["scenarios"][names.index(name)]["policies"]) == set(ROSTER)
    assert set(document["robustness"]["policies"]) == set(ROSTER)
    report = tmp_path / "BENCHMARKS.md"
    argv = ["report", "--bench", str(out), "--robustness", str(out), "--out", str(report)]
    assert main(argv) == 0
    text = report.read_text()
    assert text.index("## Results per scenario") < text.index("## Robustness on generated")
    assert text.index("## Robustness on generated") < text.index("## Sweeps")
    assert all(f"| {name} |" in text for name in names)
    # Without --robustness, the section is absent.
    image_paths = {"summary": "s.png", **{n: f"{n}.png" for n in names}}
    assert "Robustness" not in render(document, image_paths=image_paths)


def test_count_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["robustness", "--count", "0", "--json", str(tmp_path / "r.json"), "--no-progress"]
    assert main(argv) == 2
    assert "--count must be at least 1" in capsys.readouterr().err
