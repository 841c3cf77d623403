"""Baseline autoscalers the benchmark compares Chiron against (DESIGN.md section 5).

Each is a pure `decide(snapshot, tuning, state) -> (decision, state)` behind the same guard
rails as Chiron, with a `bound(...)` constructor giving drivers a `BoundPolicy`:

  - `static`: a fixed count per role (peak provisioning by default);
  - `hpa`: Kubernetes HPA on KV-cache utilisation (target 70%, default behaviour);
  - `keda`: KEDA / production-stack on queue length (waiting requests per replica);
  - `kpa`: Knative / AIBrix KPA on concurrency, 60 s stable and 6 s panic windows;
  - `llumnix`: Llumnix on KV freeness every 10 s (untuned: up below 10, down above 60), and
    `llumnix.bound_tuned` for thresholds swept per workload.

Tunings and states live in `tuning`; `registry.BASELINES` is the one name -> factory table
that drivers build baselines from (`registry.build_baseline`); `common` holds the per-role
tick they share.
"""

from __future__ import annotations

from chiron_operator.control.baselines.registry import BASELINES, BaselineParams, build_baseline

__all__ = ["BASELINES", "BaselineParams", "build_baseline"]
