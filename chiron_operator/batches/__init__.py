"""Batch work as users submit it: the OpenAI Batch API's records and their durable store.

- `model`: files, batches, their statuses and the request rows of a batch (pure data, no I/O);
- `jsonl`: reading and validating a batch input file, every error naming its line;
- `lines`: the output and error lines of a batch, in the format of `vllm run-batch`;
- `store/`: where it all lives (SQLite on the gateway's volume, PostgreSQL for several gateway
  replicas) and who of those replicas dispatches (`store.leader`).

The gateway (`chiron_operator.gateway.batch_api`, `chiron_operator.gateway.batch_runner`) serves
the HTTP API and runs the queued requests through the routing core.
"""
