"""Kubernetes on one machine, for tests, the demo and the operator's own benchmark.

- `cluster`: the stand-in itself (API server on kmock, kubelet running pods as processes, a
  private Prometheus), usable from tests and from `chiron_operator.perf`.
- `demo`: `make demo`, the real operator autoscaling emulated vLLM pods on that cluster.

A top-level package: it may use every layer below it but the operator, and only the
measurement package (`chiron_operator.perf`) imports it. `cluster` never imports `demo`.
"""
