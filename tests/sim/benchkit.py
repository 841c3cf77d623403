"""The quick benchmark, run once per test session and shared by the tests that read it."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from chiron_operator.sim.harness.bench import bench
from chiron_operator.sim.harness.runs import suite_paths

DATA = Path(__file__).parent / "data"
TINY_MIXED = str(DATA / "tiny-mixed.yaml")
TINY_INTERACTIVE = str(DATA / "tiny-interactive.yaml")


@cache
def quick_bench() -> dict[str, Any]:
    """`chiron-sim bench --quick` over the packaged suite, on two workers."""
    return bench(suite_paths(), quick=True, jobs=2)


@cache
def tiny_bench() -> dict[str, Any]:
    """The bench over the two tiny test scenarios (full variants), one worker."""
    return bench([TINY_MIXED, TINY_INTERACTIVE], quick=False, jobs=1)
