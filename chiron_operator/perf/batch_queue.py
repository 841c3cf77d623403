"""What a queued batch request itself costs in memory, apart from the allocator's leftovers.

The gateway's RSS with a batch queued overstates the queue's cost: Python keeps the memory the
intake's parsing freed for reuse. Here the gateway's own code (`build_gateway`, then one pass of
its batch dispatcher, `BatchRunner.sync`, which validates the batch and loads it into the
router) runs in this process under `tracemalloc`, which counts the Python objects still alive
after the pass (the queue's tickets and their bookkeeping) and the most alive during it.
SQLite's page cache and other memory outside Python's allocator are not counted.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from dataclasses import dataclass

from chiron_operator.batches.model import (
    BatchRecord,
    BatchStatus,
    FileRecord,
    new_batch_id,
    new_file_id,
)
from chiron_operator.gateway.config import GatewayConfig
from chiron_operator.gateway.server import build_gateway
from chiron_operator.perf.batch_load import ENDPOINT
from chiron_operator.perf.batch_store import WINDOW_S


@dataclass(frozen=True, slots=True)
class QueueMemory:
    """Python memory of one pass that validated and queued a batch (bytes)."""

    requests: int  # requests the router held after the pass
    live_bytes: int  # allocated during the pass and still alive after it
    peak_bytes: int  # the most allocated and alive at once during it

    @property
    def bytes_per_request(self) -> float:
        return self.live_bytes / self.requests if self.requests else 0.0


async def _measure(store_url: str, content: bytes) -> QueueMemory:
    # No pods: nothing is sent, and no pod is asked for its models (they go unchecked).
    gateway = build_gateway(GatewayConfig(store_url=store_url))
    store, runner = gateway.store, gateway.runner
    if store is None or runner is None:
        raise RuntimeError("a gateway with a store has a batch runner")
    now = int(time.time())
    upload = FileRecord(new_file_id(), "batch", "batch-input.jsonl", len(content), now)
    await store.put_file(upload, content)
    status = BatchStatus.VALIDATING
    await store.put_batch(
        BatchRecord(new_batch_id(), upload.id, ENDPOINT, "24h", status, now, now + WINDOW_S)
    )
    gc.collect()
    tracemalloc.start()
    try:
        await runner.sync()
        # The result of the store's last call (the rows the queue was loaded from) stays
        # reachable until the store's next call (as measured: one more call frees it), which
        # a gateway makes within a second: it is not the queue's.
        await store.get_batch("none")
        gc.collect()  # what the pass left for the collector is not the queue's
        live_bytes, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await store.close()
    queued = sum(gateway.dispatcher.router.batch.queued_by_deadline().values())
    return QueueMemory(queued, live_bytes, peak_bytes)


def queue_memory(store_url: str, content: bytes) -> QueueMemory:
    """Validate and queue the batch input file `content` on a fresh store at `store_url`."""
    return asyncio.run(_measure(store_url, content))
