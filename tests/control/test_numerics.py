"""The local controller's backpressure stays finite on degenerate targets and samples."""

from __future__ import annotations

import math

import pytest

from chiron_operator.control.backpressure import MAX_BACKPRESSURE, backpressure
from chiron_operator.core.tuning import LocalTuning


@pytest.mark.parametrize(
    ("itl_s", "target_s", "lbp"),
    [
        (0.05, 0.0, MAX_BACKPRESSURE),  # a target that underflowed to zero
        (0.0, 0.0, 0.0),
        (math.inf, 0.04, MAX_BACKPRESSURE),  # histogram_quantile in the +Inf bucket
        (1.7976931348623157e308, 1e-3, MAX_BACKPRESSURE),
        (0.02, 0.04, 0.5),
        (None, 0.04, 0.0),
        (0.02, None, 0.0),
    ],
)
def test_latency_backpressure_is_finite(
    itl_s: float | None, target_s: float | None, lbp: float
) -> None:
    found = backpressure(itl_s, target_s, None, 100.0, LocalTuning(), judge_throughput=False)
    assert found.lbp == lbp
    assert math.isfinite(found.value)
    # The Reason's text reads the same numbers: it must not fail on them.
    assert isinstance(found.describe(), str)
