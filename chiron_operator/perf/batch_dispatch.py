"""The batch benchmark's dispatch: batches through the gateway against a plain client.

One gateway per store in front of an upstream that answers at once, its one batch pod capped at
the concurrency. Round after round on that same upstream: the requests straight from a plain
client first, then the same requests as one batch through the Batch API, so that drift in the
machine's other load falls on both.
"""

from __future__ import annotations

import os
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
from chiron_operator.perf.batch_load import direct, input_file, payloads
from chiron_operator.perf.batch_results import BatchRound, Direct, Dispatch
from chiron_operator.perf.batch_rig import MODEL, GatewayProbe, Reading, running
from chiron_operator.perf.batch_store import StoreKind, store_calls_cpu_s
from chiron_operator.perf.gateway_rig import Service, cpu_seconds, machine_busy_seconds


def direct_round(upstream: Service, bodies: Sequence[bytes], s: Settings) -> Direct:
    """`bodies` posted straight to `upstream`, `concurrency` at a time."""
    upstream_s, client_s = upstream.cpu_seconds(), cpu_seconds(os.getpid())
    machine_s = machine_busy_seconds()
    run = direct(upstream.url, bodies, s.concurrency)
    machine_s = machine_busy_seconds() - machine_s
    client_s = cpu_seconds(os.getpid()) - client_s
    upstream_s = upstream.cpu_seconds() - upstream_s
    return Direct(run.requests, run.failed, run.wall_s, client_s, upstream_s, machine_s)


def _follow(probe: GatewayProbe, total: int, s: Settings, bar: Any) -> list[Reading]:
    """Readings of the gateway every `poll_s` until it has answered `total` requests in all."""
    readings: list[Reading] = []

    def answered() -> Reading | None:
        readings.append(probe.read())
        bar.update(readings[-1].finished - bar.n)
        return readings[-1] if readings[-1].finished >= total else None

    until(answered, f"{total} requests answered", s)
    return readings


def batch_round(
    probe: GatewayProbe, api: OpenAI, lines: Sequence[str], s: Settings, bar: Any
) -> BatchRound:
    """`lines` uploaded and run as one batch to its completion."""
    file_id = upload(api, input_file(lines))
    start, upstream_s = probe.read(), probe.upstream.cpu_seconds()
    batch_id = create(api, file_id)
    readings = _follow(probe, start.finished + len(lines), s, bar)
    until(lambda: batch_is(api, batch_id, "completed"), "the batch completed", s)
    end = probe.read()
    upstream_s = probe.upstream.cpu_seconds() - upstream_s
    counts = api.batches.retrieve(batch_id).request_counts
    last = readings[-1]
    # A batch answered whole between two looks has no steady span of its own: then it runs
    # from the batch's creation.
    first = next((r for r in readings if r.finished > start.finished and r is not last), start)
    return BatchRound(
        requests=len(lines),
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        batch_s=end.at_s - start.at_s,
        batch_cpu_s=end.cpu_s - start.cpu_s,
        window_s=last.at_s - first.at_s,
        window_requests=last.finished - first.finished,
        window_cpu_s=last.cpu_s - first.cpu_s,
        window_loop_cpu_s=last.loop_cpu_s - first.loop_cpu_s,
        window_machine_cpu_s=last.machine_s - first.machine_s,
        window_others_cpu_s=last.others_s - first.others_s,
        upstream_cpu_s=upstream_s,
    )


def dispatch(
    kind: StoreKind, lines: Sequence[str], s: Settings, workdir: Path, bar: Any
) -> tuple[Dispatch, list[Direct]]:
    """Every round on a fresh gateway on a fresh store of `kind`, then the store's statements
    alone; and the direct rounds run meanwhile."""
    bodies = payloads(lines)
    rounds, directs = [], []
    with kind.fresh(workdir) as url, running(url, s.concurrency, workdir) as (upstream, gateway):
        probe, api = GatewayProbe(gateway, upstream), api_client(gateway, s)
        for r in range(s.rounds):
            bar.set_postfix_str(f"round {r + 1}/{s.rounds}, direct")
            directs.append(direct_round(upstream, bodies, s))
            bar.set_postfix_str(f"round {r + 1}/{s.rounds}, Batch API")
            rounds.append(batch_round(probe, api, lines, s, bar))
    bar.set_postfix_str("the store's statements alone")
    with kind.fresh(workdir / "store-calls") as url:
        store_s = store_calls_cpu_s(url, lines, MODEL)
    return Dispatch(kind.name, tuple(rounds), len(lines), store_s), directs
