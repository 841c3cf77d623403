"""The sweep's adoption rule: the best worst case over the runs, and leave-one-out."""

from __future__ import annotations

from typing import Any

from chiron_operator.sim.harness.adoption import adopt, leave_one_out, scores


def row(overrides: dict[str, Any], attainments: dict[str, float], ratio: float) -> dict[str, Any]:
    runs = [
        {"scenario": name, "seed": 1, "attainment": value, "oracle_ratio": ratio}
        for name, value in attainments.items()
    ]
    return {"overrides": overrides, "runs": runs}


# The defaults fail "c"; "helps-mean" lifts a and b a lot but sinks c further; "robust" fixes
# c for a little everywhere else; "pricey" is as robust and costs more; the overload "o" is
# infeasible for everyone, so it weighs only by the little some set did better there.
DEFAULTS = row({}, {"a": 0.99, "b": 0.99, "c": 0.70, "o": 0.28}, 3.0)
HELPS_MEAN = row({"x": 1}, {"a": 1.00, "b": 1.00, "c": 0.60, "o": 0.30}, 2.9)
ROBUST = row({"y": 1}, {"a": 0.985, "b": 0.99, "c": 0.95, "o": 0.31}, 3.2)
PRICEY = row({"z": 1}, {"a": 0.986, "b": 0.99, "c": 0.95, "o": 0.31}, 3.6)
INVALID = {"overrides": {"w": 1}, "invalid": ["a: rejected"], "runs": []}
ROWS = [DEFAULTS, HELPS_MEAN, ROBUST, PRICEY, INVALID]


def test_the_best_worst_case_wins_not_the_best_mean() -> None:
    regrets = scores(ROWS)
    assert regrets[4] is None
    assert abs(regrets[0] - 0.25) < 1e-9  # defaults: 0.95 - 0.70 on c
    assert abs(regrets[1] - 0.35) < 1e-9  # higher mean, worse worst case
    assert abs(regrets[2] - 0.015) < 1e-9  # 1.00 - 0.985 on a
    assert adopt(ROWS) == 2  # robust and pricey tie within noise: the cheaper


def test_the_defaults_stay_when_they_tie() -> None:
    close = row({"v": 1}, {"a": 0.99, "b": 0.99, "c": 0.70, "o": 0.28}, 2.0)
    assert adopt([DEFAULTS, close]) == 0  # cheaper, but no better in the worst case


def test_a_grid_without_reference_takes_the_cheapest_of_the_tied() -> None:
    assert adopt([PRICEY, ROBUST], reference=None) == 1


def test_leave_one_out_shows_what_the_suite_alone_would_have_picked() -> None:
    found = {entry["left_out"]: entry for entry in leave_one_out(ROWS)}
    # Without c, nothing reveals the trap: the set with the best elsewhere is adopted, and it
    # then fails c by 35 points.
    assert found["c"]["chosen"] == 1
    assert abs(found["c"]["regret_on_left_out"] - 0.35) < 1e-9
    assert found["a"]["chosen"] in (2, 3)
