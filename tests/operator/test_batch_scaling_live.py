"""Batch scaling from the gateway's Batch API, end to end: the real operator, the pool's real
gateway (deployed by the operator, its SQLite store on the dev cluster), emulated vLLM pods and
a real Prometheus reading the gateway's series as every pool without `spec.batchQueue` does.

One pool with one interactive pod, no mixed role and one batch pod of two sequences (batch max
4), so that the batch pod's throughput is small and measured (the operator's per-instance
estimate) and the output lengths are known (a warm-up batch completes first). Then:

- a backlog the batch pod can meet long before its window ends: the batch role holds at 1 for
  many ticks, and the decisions say why (deadlines hold at the current capacity);
- a backlog sized at about twice what the batch pod can deliver before its one-minute window
  ends: the operator adds batch instances, saying so in `status.decisions` and in an Event.

The gateway exports each group's deadline rounded down to its bucket
(`routing.DEADLINE_BUCKET_S`, 10 s), so a window looks up to 9 s shorter to the operator. The
second backlog is about sizing, so it is submitted when its deadline and the exported one agree
within a few seconds.

The module fixture runs the timeline once and records it; the tests read the record.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from openai import OpenAI
from openai.types import Batch

from chiron_operator.api import parse_spec
from chiron_operator.devcluster.demo.traffic import gateway_endpoint
from chiron_operator.metrics.promql import (
    GATEWAY_OUTPUT_TOKENS,
    PART_LABEL,
    PoolQuery,
    Signal,
    part_tag,
)
from chiron_operator.metrics.promql import Part as QueryPart
from chiron_operator.routing.batch_queue import BatchQueue
from tests.operator.conftest import NAMESPACE, OPERATOR, Env
from tests.operator.harness import (
    MODEL,
    Json,
    condition_is,
    fixed,
    pool_spec,
    record_time,
    status_writes,
    wait_for,
)

pytestmark = pytest.mark.timeout(420)

POOL = "bscale"
OFF = {"minReplicas": 0, "maxReplicas": 0}
BATCH_SEQS = 2
BATCH_MAX = 4
OUTPUT_TOKENS = 40
WARMUP_TOKENS = (16, 24, 32, 40, 48, 56)
MEETABLE_REQUESTS = 100  # about 25 s of work for the batch pod, due in 10 minutes
TICKS_HELD = 8
UNMEETABLE_WINDOW_S = 60
# The unmeetable backlog needs this many times what one batch pod delivers: at least one more
# instance whatever the pod's current rate, and (with the bound's margin) no more than the role's
# max allows, so the operator's own reason stands rather than a clamp's.
UNMEETABLE_LOAD_RATIO = 1.8
DEADLINE_ROUNDING_S = 3  # how much earlier the exported deadline may be than the batch's
TERMINAL = {"completed", "expired", "failed", "cancelled"}


@dataclass
class Phase:
    """One backlog: when it was submitted, its batch, and the pool as polled meanwhile."""

    submitted_s: float
    batch_id: str
    requests: int
    statuses: list[Json] = field(default_factory=list)
    end_s: float = 0.0


@dataclass(frozen=True)
class Run:
    meetable: Phase
    unmeetable: Phase
    instance_tokens_per_s: float
    lengths_known: dict[str, float]
    scaled_to: int
    scaled_s: float


def _line(custom_id: str, max_tokens: int) -> str:
    body = {"model": MODEL, "prompt": "x", "max_tokens": max_tokens}
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/completions", "body": body}
    )


def _submit(api: OpenAI, tokens: list[int], window: str, prefix: str) -> Batch:
    lines = [_line(f"{prefix}-{i}", n) for i, n in enumerate(tokens)]
    uploaded = api.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    return api.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/completions",
        completion_window=window,  # type: ignore[arg-type]  # any window; the SDK's type: 24h
    )


def _finished(api: OpenAI, batch_id: str) -> Batch | None:
    batch = api.batches.retrieve(batch_id)
    return batch if batch.status in TERMINAL else None


def _ready(env: Env) -> OpenAI | None:
    """The pool's openai client once its pods, its gateway and the operator's view are up."""
    pools = env.pools
    endpoint = gateway_endpoint(pools.pods(POOL))
    up = all(len(pools.ready_pods(POOL, r)) == 1 for r in ("interactive", "batch"))
    fresh = condition_is(pools, POOL, "MetricsAvailable", "True")
    # An empty queue is a fresh gateway sample with no series (no sample at all holds instead).
    batch = pools.decisions(POOL, "batch", "replicas")
    reads_queue = bool(batch) and batch[-1]["reason"] == "BatchQueueEmpty"
    if endpoint is None or not up or not fresh or not reads_queue:
        return None
    return OpenAI(base_url=f"http://127.0.0.1:{endpoint.port}/v1", api_key="unused", timeout=30.0)


def _lengths(env: Env, spec: Json) -> dict[str, float] | None:
    """Prometheus' answer to the operator's own query of the gateway's batch output lengths,
    once the gateway's counter (selected as the operator selects the gateway's pods) holds every
    warm-up request: the query's `increase` extrapolates, so its count alone is no sign."""
    query = PoolQuery.from_spec(NAMESPACE, POOL, parse_spec(spec))
    counter = query.selector.select_gateway(f"{GATEWAY_OUTPUT_TOKENS}_count")
    counted = sum(float(r["value"][1]) for r in env.prometheus.query(counter))
    if counted < len(WARMUP_TOKENS):
        return None
    found = env.prometheus.query(query.queries()[Signal.GATEWAY_BATCH])
    return {r["metric"].get(PART_LABEL, ""): float(r["value"][1]) for r in found}


def _follow(env: Env, phase: Phase, until: Callable[[], object], timeout_s: float) -> None:
    """Poll the pool's status into `phase` until `until()` is truthy."""

    def probe() -> object:
        phase.statuses.append({"at": time.time(), **env.pools.status(POOL)})
        return until()

    wait_for(probe, timeout_s=timeout_s, what=f"{POOL}: {until.__doc__}", interval_s=0.3)
    phase.end_s = time.time()


def _batch_at_one(env: Env) -> bool:
    status = env.pools.status(POOL)
    desired = ((status.get("roles") or {}).get("batch") or {}).get("desiredReplicas")
    return desired == 1 and env.pools.replicas(POOL, "batch") == 1


def _queued(status: Json) -> int:
    return int((status.get("signals") or {}).get("queuedBatchRequests") or 0)


def _meetable(env: Env, api: OpenAI) -> Phase:
    batch = _submit(api, [OUTPUT_TOKENS] * MEETABLE_REQUESTS, "10m", "meet")
    phase = Phase(time.time(), batch.id, MEETABLE_REQUESTS)

    def held() -> bool:
        """the operator ticked TICKS_HELD times with the backlog queued"""
        seen = [s for s in phase.statuses if _queued(s) > 0]
        if not seen:
            return False
        writes = status_writes(env.stack.audit, NAMESPACE, POOL, OPERATOR, seen[0]["at"])
        return len(writes) >= TICKS_HELD

    _follow(env, phase, held, timeout_s=90)
    wait_for(lambda: _finished(api, batch.id), timeout_s=180, what="the meetable batch done")
    return phase


def _exported_deadline_agrees() -> bool:
    """A window starting now ends where the gateway's exported deadline group says it does."""
    due = math.floor(time.time()) + UNMEETABLE_WINDOW_S
    return due - BatchQueue().deadline_group(due) <= DEADLINE_ROUNDING_S


def _unmeetable(env: Env, api: OpenAI, per_instance: float) -> tuple[Phase, int, float]:
    need_tokens = UNMEETABLE_LOAD_RATIO * per_instance * UNMEETABLE_WINDOW_S
    count = math.ceil(need_tokens / OUTPUT_TOKENS)
    wait_for(_exported_deadline_agrees, timeout_s=70, what="a window the export keeps whole")
    batch = _submit(api, [OUTPUT_TOKENS] * count, f"{UNMEETABLE_WINDOW_S}s", "miss")
    phase = Phase(time.time(), batch.id, count)

    def scaled() -> int | None:
        """batch instances added"""
        replicas = env.pools.replicas(POOL, "batch") or 0
        return replicas if replicas > 1 else None

    _follow(env, phase, scaled, timeout_s=60)
    scaled_s = phase.end_s
    replicas = env.pools.replicas(POOL, "batch") or 0
    api.batches.cancel(batch.id)  # the point is made; free the pods for the next module
    return phase, replicas, scaled_s


@pytest.fixture(scope="module")
def run(live: Env) -> Iterator[Run]:
    spec = pool_spec(
        live.prometheus.url,
        roles={"interactive": fixed(1, 1), "mixed": OFF, "batch": fixed(1, BATCH_MAX, BATCH_SEQS)},
        # What a user of this workload would set: its answers are ~40 tokens (not the prior's
        # 256, which until 30 completions would make the meetable backlog look 6x its size),
        # and emulated pods start in seconds (not the prior's 2 minutes, longer than the
        # unmeetable backlog's window).
        tuning={"global": {"batchOutputTokensPrior": OUTPUT_TOKENS, "startupPriorS": 5}},
    )
    live.pools.create(POOL, spec)
    try:
        api = wait_for(lambda: _ready(live), timeout_s=90, what=f"{POOL} ready", interval_s=0.5)
        warmup = _submit(api, list(WARMUP_TOKENS), "5m", "warm")
        wait_for(lambda: _finished(api, warmup.id), timeout_s=90, what="the warm-up batch done")
        lengths = wait_for(lambda: _lengths(live, spec), timeout_s=30, what="known lengths")
        # On a starved machine the warm-up's first throughput samples can be low enough for its
        # 5-minute window to look short, and the role grows; the meetable phase starts from 1.
        wait_for(lambda: _batch_at_one(live), timeout_s=180, what="the batch role back at 1")
        meetable = _meetable(live, api)
        signals = live.pools.status(POOL).get("signals") or {}
        per_instance = float(signals.get("batchInstanceTokensPerS") or 0.0)
        unmeetable, replicas, scaled_s = _unmeetable(live, api, per_instance)
        yield Run(meetable, unmeetable, per_instance, lengths, replicas, scaled_s)
    finally:
        live.pools.delete(POOL, timeout_s=60)


def _batch_records(env: Env, since_s: float, until_s: float) -> list[Json]:
    return [
        d
        for d in env.pools.decisions(POOL, "batch", "replicas")
        if since_s <= record_time(d) <= until_s
    ]


def test_the_operator_reads_the_gateways_queue_and_lengths(run: Run) -> None:
    lengths = run.lengths_known
    mean = lengths[part_tag(QueryPart.SUM)] / lengths[part_tag(QueryPart.OBSERVATIONS)]
    assert mean == pytest.approx(sum(WARMUP_TOKENS) / len(WARMUP_TOKENS), rel=0.01)
    queued = max(_queued(s) for s in run.meetable.statuses)
    assert 0 < queued <= MEETABLE_REQUESTS  # the backlog, less what the pod runs
    # Measured on the saturated batch pod, not the 2000 tokens/s prior.
    assert 0 < run.instance_tokens_per_s < 1000


def test_a_backlog_the_batch_pod_can_meet_adds_no_instance(live: Env, run: Run) -> None:
    phase = run.meetable
    queued = [s for s in phase.statuses if _queued(s) > 0]
    desired = {int(s["roles"]["batch"]["desiredReplicas"]) for s in phase.statuses}
    records = _batch_records(live, phase.submitted_s, phase.end_s)
    assert desired == {1}, (desired, [(r["to"], r.get("message")) for r in records])
    assert [r for r in records if r["to"] != 1] == []
    holds = [r for r in records if r["reason"] == "NoChange"]
    assert holds, records
    assert "batch backpressure 0.00" in holds[-1]["message"]
    assert "hold 1 batch" in holds[-1]["message"]
    # Every one of those ticks saw the backlog: it was still queued when the watch ended.
    assert _queued(phase.statuses[-1]) > 0
    writes = status_writes(live.stack.audit, NAMESPACE, POOL, OPERATOR, queued[0]["at"])
    assert len([w for w in writes if w.time_s <= phase.end_s]) >= TICKS_HELD


def test_a_backlog_it_cannot_meet_adds_batch_instances_and_says_why(live: Env, run: Run) -> None:
    phase = run.unmeetable
    assert 1 < run.scaled_to <= BATCH_MAX
    records = _batch_records(live, phase.submitted_s, run.scaled_s + 5)
    added = [r for r in records if r["to"] > r["from"] and r["applied"]]
    assert added and added[0]["reason"] == "BatchDeadlinesAtRisk", records
    # Sized on the backlog (not an overdue-looking group, which needs "0 tokens/s"): about
    # UNMEETABLE_LOAD_RATIO times what one instance delivers.
    found = re.search(r"need (\d+) tokens/s, have (\d+)\): add (\d+) batch", added[0]["message"])
    assert found is not None, added[0]["message"]
    need, added_count = float(found.group(1)), int(found.group(3))
    assert need > run.instance_tokens_per_s
    assert added[0]["to"] == 1 + added_count
    events = live.pools.events(POOL, "BatchDeadlinesAtRisk")
    assert any(f"batch replicas 1 -> {added[0]['to']}" in e["message"] for e in events), events
