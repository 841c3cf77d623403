"""`make demo` (`chiron-demo`): the real operator autoscaling emulated vLLM pods on the dev cluster.

- `workload`: the demo's pool, timeline and traffic, all derived from the vendored real data.
- `traffic`: clients of a pool's Services, measured as a user measures them;
  `batch_gateway`: the demo's batch backlog holder; `clients`: interactive replay and batch
  submission on time.
- `run`: the clients on the dev cluster's event loop and the once-a-second sample of the pool;
  `report`, `plot`: the live table, `summary.json` and `demo.png`; `cli`: the command.
"""
