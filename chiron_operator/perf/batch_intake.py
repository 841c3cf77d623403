"""The batch benchmark's intake: an input file uploaded, made a batch and wholly queued.

The gateway's one pod is given without a cap, so the gateway validates and queues the batch but
sends nothing: the queue keeps every request while its time and the gateway's memory are read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openai import OpenAI

from chiron_operator.perf.batch_client import (
    Settings,
    api_client,
    batch_is,
    create,
    until,
    upload,
)
from chiron_operator.perf.batch_load import input_file
from chiron_operator.perf.batch_queue import QueueMemory, queue_memory
from chiron_operator.perf.batch_results import Intake
from chiron_operator.perf.batch_rig import GatewayProbe, Reading, running
from chiron_operator.perf.batch_store import StoreKind


def intake(kind: StoreKind, lines: Sequence[str], s: Settings, workdir: Path, bar: Any) -> Intake:
    """`lines` as one batch on a fresh gateway on a fresh store of `kind`; `bar` shows it."""
    content = input_file(lines)
    bar.set_postfix_str("the queue's own memory")
    with kind.fresh(workdir / "queue") as url:
        queue = queue_memory(url, content)
    with kind.fresh(workdir) as url, running(url, None, workdir) as (upstream, gateway):
        probe = GatewayProbe(gateway, upstream)
        time.sleep(s.settle_s)  # the dispatcher lock taken, the pod's models asked
        api = api_client(gateway, s)
        return _timed(probe, api, content, len(lines), store=kind.name, queue=queue, s=s, bar=bar)


def _timed(
    probe: GatewayProbe,
    api: OpenAI,
    content: bytes,
    requests: int,
    *,
    store: str,
    queue: QueueMemory,
    s: Settings,
    bar: Any,
) -> Intake:
    """Upload, create, and wait until every request is queued, reading the gateway on the way."""
    idle_bytes, start = probe.rss_bytes(), probe.read()
    bar.set_postfix_str("uploading")
    file_id = upload(api, content)
    uploaded_s, upload_peak_bytes = time.monotonic(), probe.peak_rss_bytes()
    batch_id = create(api, file_id)
    created_s = time.monotonic()
    bar.set_postfix_str("validating")
    until(lambda: batch_is(api, batch_id, "in_progress"), "the batch in progress", s)
    running_s = time.monotonic()
    bar.set_postfix_str("queueing")
    end = _queued(probe, requests, s, bar)
    return Intake(
        store=store,
        requests=requests,
        file_bytes=len(content),
        upload_s=uploaded_s - start.at_s,
        create_s=created_s - uploaded_s,
        to_in_progress_s=running_s - created_s,
        to_queued_s=end.at_s - running_s,
        total_s=end.at_s - start.at_s,
        rss_idle_bytes=idle_bytes,
        rss_queued_bytes=probe.rss_bytes(),
        peak_after_upload_bytes=upload_peak_bytes,
        peak_rss_bytes=probe.peak_rss_bytes(),
        cpu_s=end.cpu_s - start.cpu_s,
        loop_cpu_s=end.loop_cpu_s - start.loop_cpu_s,
        queue=queue,
    )


def _queued(probe: GatewayProbe, requests: int, s: Settings, bar: Any) -> Reading:
    """The first reading of the gateway with `requests` in its queue."""

    def check() -> Reading | None:
        reading = probe.read()
        bar.update(reading.queued - bar.n)
        return reading if reading.queued >= requests else None

    return until(check, f"{requests} requests queued", s)
