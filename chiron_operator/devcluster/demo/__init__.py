"""`make demo` (`chiron-demo`): the real operator autoscaling emulated vLLM pods on the dev cluster.

- `workload`: the demo's pool, timeline and traffic, all derived from the vendored real data.
- `traffic`: clients of a pool (its gateway, or its Services' pods), measured as a user measures
  them; `clients`: the interactive replay through the pool's gateway; `backlog`: the batch
  backlog as one batch of the gateway's OpenAI Batch API.
- `run`: the clients on the dev cluster's event loop and the once-a-second sample of the pool
  and its gateway; `report`, `plot`: the live table, `summary.json` and `demo.png`; `cli`: the
  command.
"""
