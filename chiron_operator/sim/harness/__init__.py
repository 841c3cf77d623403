"""The benchmark harness around the simulator's engine: what `chiron-sim` runs.

- `policies`: the roster of policies a run can use (Chiron and the baselines), with per-run
  overrides; `runs`: one scenario x policy x seed, in worker processes; `oracle`: the fluid
  lower bound on GPU-hours.
- `bench`, `static_search`, `sweep`, `speed_probe`, `speed`: the benchmark suite, the hindsight
  static search, the one-at-a-time sweeps and the speed measurements.
- `report`, `plots`: docs/BENCHMARKS.md and the PNGs; `cli`: the `chiron-sim` command;
  `run_files`: what `chiron-sim run` writes; `user_run`: a user's trace on a user's pool
  manifest (`chiron-sim run --trace FILE --pool POOL.yaml`).

The engine (the modules of `chiron_operator.sim` itself) never imports this package.
"""
