"""Baseline autoscalers the benchmark compares Chiron against (DESIGN.md section 5).

Each is a pure `decide(snapshot, tuning, state) -> (decision, state)` behind the same guard
rails as Chiron, with a `bound(...)` constructor giving drivers a `BoundPolicy`:

  - `static`: a fixed count per role (peak provisioning by default);
  - `hpa`: Kubernetes HPA on KV-cache utilisation (target 70%, default behaviour);
  - `keda`: KEDA / production-stack on queue length (waiting requests per replica);
  - `kpa`: Knative / AIBrix KPA on concurrency, 60 s stable and 6 s panic windows;
  - `llumnix`: Llumnix on KV freeness every 10 s (untuned: up below 10, down above 60), and
    `llumnix.bound_tuned` for thresholds swept per workload.

Tunings and states live in `chiron_operator.core.baseline_tuning`.
"""

from __future__ import annotations

from typing import Any

from chiron_operator.control.baselines import hpa, keda, kpa, llumnix, static
from chiron_operator.control.policy import BoundPolicy


def default_baselines() -> dict[str, BoundPolicy[Any, Any]]:
    """Every baseline with its documented defaults, keyed by policy name (Llumnix untuned)."""
    policies: list[BoundPolicy[Any, Any]] = [
        static.bound(),
        hpa.bound(),
        keda.bound(),
        kpa.bound(),
        llumnix.bound(),
    ]
    return {policy.name: policy for policy in policies}


__all__ = ["default_baselines", "hpa", "keda", "kpa", "llumnix", "static"]
