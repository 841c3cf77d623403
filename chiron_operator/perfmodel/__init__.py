"""The performance model of a vLLM instance, shared by the simulator and the emulator.

- `latency`: step times of continuous batching (decode `a + b*batch + c*context`, prefill
  `max(floor, a + b*T + c*T^2)`, chunk costs that sum to the prompt's quadratic).
- `profiles`: the calibrated coefficients and KV capacity per model and GPU, as generated code;
  `calibration` regenerates them from the vendored tables in `data/` with `fitting`'s exact
  least-absolute-error fit.
- `coldstart`: cold-start presets from public reports of vLLM start times.
- `vllm_defaults`: the engine settings vLLM picks by default (chunked-prefill token budgets).

It imports only `core` and `api.base`; the simulator (`chiron_operator.sim`) and the emulator
(`chiron_operator.emulator`) both import it, and neither imports the other.
"""
