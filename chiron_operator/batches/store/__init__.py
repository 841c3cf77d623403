"""Durable homes for the Batch API's files, batches and request rows.

- `base`: the `Store` and `Leadership` protocols every backend meets;
- `sqlite`: the embedded default, a file on the gateway's volume (one replica dispatches);
- `postgres`: a PostgreSQL server several gateway replicas share (one dispatches at a time);
- `sql`, `schema`: what both backends share: the queries, the tables and their migration;
- `url`: `open_store("sqlite:///PATH" | "postgresql://...")`;
- `threaded`: the asyncio face of a store (one worker thread), as the gateway uses it.
"""
