"""A vLLM-compatible server for machines without GPUs, paced by the performance model.

It speaks vLLM's OpenAI endpoints and exports vLLM's /metrics (same names, types, labels and
buckets), so the operator, Prometheus and traffic drivers can be exercised on a laptop or a kind
cluster. Modules: `args` (the `vllm serve`-style command line), `scheduler` (admission, KV blocks,
preemption), `engine` (the paced loop), `metrics`, `protocol` (request and response bodies) and
`server` (aiohttp). Nothing else in the package imports it; it shares only
`chiron_operator.perfmodel` with the simulator.
"""
