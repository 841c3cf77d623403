"""The batch benchmark's knobs, and its side of the Batch API: the official `openai` client
on a gateway, uploads, batches, and waits that give up rather than hang."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from openai import OpenAI

from chiron_operator.perf.batch_load import ENDPOINT
from chiron_operator.perf.gateway_rig import Service

T = TypeVar("T")
ENDED = frozenset({"failed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a run; the defaults are `make bench-batch`'s (about a minute on SQLite)."""

    intake_requests: int = 50_000
    dispatch_requests: int = 20_000
    rounds: int = 2  # dispatch rounds per store, each after a direct one on the same upstream
    concurrency: int = 64
    settle_s: float = 1.0  # after the gateway is up, before its idle memory is read
    poll_s: float = 0.1  # how often the gateway is looked at (its /metrics, a batch's status)
    timeout_s: float = 180.0  # for any one wait
    postgres_url: str = ""
    seed: int = 1


def api_client(gateway: Service, s: Settings) -> OpenAI:
    return OpenAI(
        base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=s.timeout_s
    )


def until(check: Callable[[], T | None], what: str, s: Settings) -> T:
    """Poll `check` every `poll_s` until it returns something; TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + s.timeout_s
    while (found := check()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {s.timeout_s:g} s: {what}")
        time.sleep(s.poll_s)
    return found


def batch_is(api: OpenAI, batch_id: str, wanted: str) -> bool | None:
    """True once the batch is `wanted`, None before; a batch that ended otherwise is an error."""
    batch = api.batches.retrieve(batch_id)
    if batch.status == wanted:
        return True
    if batch.status in ENDED:
        raise RuntimeError(f"batch {batch_id} is {batch.status}: {batch.errors}")
    return None


def upload(api: OpenAI, content: bytes) -> str:
    """`files.create` with purpose `batch`: the new file's id."""
    return api.files.create(file=("batch-input.jsonl", content), purpose="batch").id


def create(api: OpenAI, file_id: str) -> str:
    """`batches.create` over the file, window 24h: the new batch's id."""
    batch = api.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")
    return batch.id
