"""`chiron-gateway`: the OpenAI-compatible request path in front of one pool.

- `server`: the aiohttp app (`/v1/chat/completions`, `/v1/completions`, `/v1/models`,
  `/health`, `/metrics`); `proxy`: one request end to end (classify, wait for a pod, relay,
  retry or re-queue when a pod gives no answer); `errors`: OpenAI-shaped error bodies.
- `dispatcher`: the routing core (`chiron_operator.routing`) on the event loop: it carries out
  the router's sends, cut-offs and refusals, keeps each pod's cap current and publishes the
  per-class load (`metrics`).
- `discovery`: the pool's pods, gateway replicas and target batch sizes, watched through the
  Kubernetes API; `config`, `cli`: the command line (static endpoints or a pool).
- `batch_api`, `batch_runner`, `batch_work`, `batch_upstream`, `batch_stream`: the OpenAI
  Batch API, from the endpoints to one request streamed to a pod and its answer put back
  together for the output file.

It imports the routing core, never the operator; the operator deploys it (one Deployment and
Service per pool) and reads its metrics.
"""
