"""Discrete-event simulator of a vLLM cluster that drives the shipped controllers and the
shipped routing core (`chiron_operator.routing`, as the pool's gateway runs it).

The modules here are the engine (events, pods scheduling as vLLM 0.32 does, the routers, the
pool as Kubernetes runs it, observation as Prometheus sees it, workloads, scenarios, records);
`harness` is the benchmark built on it (`chiron-sim`) and is never imported by the engine. Step
times and cold starts come from `chiron_operator.perfmodel`, shared with the emulator.
"""
