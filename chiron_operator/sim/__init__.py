"""Discrete-event simulator of a vLLM cluster that drives the shipped controllers.

The modules here are the engine (events, pods, router, the pool as Kubernetes runs it,
observation as Prometheus sees it, workloads, scenarios, records); `harness` is the benchmark
built on it (`chiron-sim`) and is never imported by the engine. Step times and cold starts come
from `chiron_operator.perfmodel`, shared with the emulator.
"""
