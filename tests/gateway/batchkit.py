"""Test support for the Batch API: input files, an `openai` client on a gateway, polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

from openai import AsyncOpenAI
from openai.types import Batch

from tests.gateway.gatekit import MODEL

ENDPOINT = "/v1/completions"


def request_line(custom_id: str, *, max_tokens: int = 4, model: str = MODEL, **extra: Any) -> str:
    body = {"model": model, "prompt": "hello", "max_tokens": max_tokens, **extra}
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line)


def input_file(count: int, *, max_tokens: int = 4, prefix: str = "req") -> bytes:
    lines = (request_line(f"{prefix}-{i}", max_tokens=max_tokens) for i in range(count))
    return ("\n".join(lines) + "\n").encode()


def client(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30.0)


async def submit(
    api: AsyncOpenAI, content: bytes, window: str = "1h", **extra: Any
) -> tuple[str, Batch]:
    """Upload `content` and make a batch of it; the input file's id and the new batch."""
    uploaded = await api.files.create(file=("input.jsonl", content), purpose="batch")
    batch = await api.batches.create(
        input_file_id=uploaded.id,
        endpoint=ENDPOINT,
        completion_window=window,  # type: ignore[arg-type]
        **extra,
    )
    return uploaded.id, batch


async def wait_status(
    api: AsyncOpenAI, batch_id: str, statuses: Iterable[str], timeout_s: float = 30.0
) -> Batch:
    """Poll the batch until its status is one of `statuses`; fail naming the last seen."""
    wanted = set(statuses)
    deadline = time.monotonic() + timeout_s
    while True:
        batch = await api.batches.retrieve(batch_id)
        if batch.status in wanted:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} is {batch.status}, not {sorted(wanted)}")
        await asyncio.sleep(0.05)


async def lines_of(api: AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await api.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines() if line]
