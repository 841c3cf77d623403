"""The demo's parts that need no running cluster: its pool, its traffic, its gateway, its summary.

The whole demo (`make demo`, about 3 minutes) runs the real operator, Prometheus and emulated
pods; it is not part of `make test`. These tests pin what it is made of.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest

from chiron_operator.api import parse_spec, validate_spec
from chiron_operator.batches.jsonl import check_batch_lines, parse_input
from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.devcluster.demo.backlog import (
    ENDPOINT,
    BatchBacklog,
    BatchProgress,
    BatchResult,
    GatewayApi,
    input_file,
)
from chiron_operator.devcluster.demo.cli import DRAIN_GRACE_CAP_S
from chiron_operator.devcluster.demo.clients import InteractiveResult
from chiron_operator.devcluster.demo.report import (
    DemoRecord,
    RoleSample,
    Sample,
    batch_size_moves,
    render_table,
    scaling_actions,
    summarise,
)
from chiron_operator.devcluster.demo.run import count_outcomes
from chiron_operator.devcluster.demo.traffic import (
    Completion,
    Endpoint,
    endpoints_of,
    gateway_endpoint,
)
from chiron_operator.devcluster.demo.workload import (
    MAX_BATCH_OUTPUT,
    MAX_PROMPT,
    DemoPlan,
    batch_requests,
    emulator_args,
    interactive_requests,
    pool_spec,
)
from chiron_operator.emulator.args import parse_args as emulator_parse_args
from chiron_operator.kube import build_deployment, drain_timing
from chiron_operator.metrics.promql import PoolQuery, Signal
from chiron_operator.sim.requests import RequestSpec
from tests.gateway.gatekit import MODEL as GATEWAY_MODEL
from tests.gateway.gatekit import PodSpec, gateway, pods


@pytest.mark.parametrize("time_scale", [1.0, 4.0])
def test_the_demo_pool_is_valid_and_its_slos_follow_the_time_scale(time_scale: float) -> None:
    plan = DemoPlan(time_scale=time_scale)
    spec = pool_spec(plan, "http://127.0.0.1:9090")
    assert validate_spec(spec) == []
    assert spec["slo"]["interactiveTtftS"] == pytest.approx(2.0 / time_scale)
    assert spec["slo"]["interactiveItlS"] == pytest.approx(0.1 / time_scale)
    parsed = parse_spec(spec)
    assert parsed.gateway.enabled and "batchQueue" not in spec
    # What ships: the batch signals come from the pool's gateway pods, with no PromQL of ours.
    query = PoolQuery.from_spec("llm", "demo", parsed)
    assert query.gateway_batch
    assert 'pod=~"demo-gateway-[a-z0-9]+-[a-z0-9]+"' in query.queries()[Signal.GATEWAY_BATCH]


def test_the_demo_pods_drain_in_full() -> None:
    spec = parse_spec(pool_spec(DemoPlan(), "http://127.0.0.1:9090"))
    built = build_deployment("demo", "llm", "u", spec, Role.MIXED, replicas=1, max_num_seqs=8)
    pod = built["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    # The emulators drain on SIGTERM (the real flag, which they honour), and the dev cluster's
    # kubelet lets them: its cap on the grace period is above the pool's.
    config = emulator_parse_args(["m", "--port", "0", *args[1:], *emulator_args(DemoPlan())])
    assert config.shutdown_timeout_s == drain_timing(spec).request_timeout_s > 0
    assert 0 < pod["terminationGracePeriodSeconds"] <= DRAIN_GRACE_CAP_S
    assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1] == "2"


def test_emulators_accept_the_demo_flags_and_keep_the_cold_start_in_wall_clock() -> None:
    plan = DemoPlan(time_scale=4.0, cold_start_s=5.0)
    config = emulator_parse_args(["m", "--port", "0", *emulator_args(plan)])
    assert config.time_scale == 4.0
    assert config.startup_delay_s / config.time_scale == pytest.approx(5.0)


def test_the_surge_is_several_times_the_baseline_and_lengths_fit_the_context() -> None:
    plan = DemoPlan()
    requests = interactive_requests(plan)
    arrivals = [r.arrival_s for r in requests]
    assert arrivals == sorted(arrivals)
    assert arrivals[0] >= 0 and arrivals[-1] < plan.end_s
    baseline = sum(a < plan.surge_start_s for a in arrivals) / plan.surge_start_s
    surge = sum(plan.surge_start_s <= a < plan.surge_end_s for a in arrivals) / (
        plan.surge_end_s - plan.surge_start_s
    )
    assert surge > 3 * baseline
    assert all(r.request_class is RequestClass.INTERACTIVE for r in requests)
    assert max(r.prompt_tokens for r in requests) <= MAX_PROMPT
    backlog = batch_requests(plan)
    assert len(backlog) == plan.batch_requests
    assert {r.deadline_s for r in backlog} == {plan.batch_at_s + plan.batch_deadline_s}
    assert max(r.output_tokens for r in backlog) <= MAX_BATCH_OUTPUT


def test_a_shorter_demo_keeps_the_story() -> None:
    short = DemoPlan().scaled(0.5)
    assert short.surge_start_s < short.surge_end_s < short.batch_at_s < short.end_s
    assert short.batch_requests == DemoPlan().batch_requests // 2


def test_the_gateway_is_the_ready_gateway_pod_with_its_port() -> None:
    def pod(name: str, component: str, ready: bool) -> dict[str, object]:
        return {
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/component": component},
                "annotations": {"devcluster.chiron.io/port": "8123"},
            },
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        }

    found = gateway_endpoint(
        [
            pod("demo-mixed-1", "mixed", True),
            pod("demo-gateway-b", "gateway", True),
            pod("demo-gateway-a", "gateway", False),
        ]
    )
    assert found is not None and (found.pod, found.port) == ("demo-gateway-b", 8123)
    assert gateway_endpoint([pod("demo-gateway-a", "gateway", False)]) is None


def test_the_gateway_counters_are_read_from_its_metrics() -> None:
    text = """# TYPE chiron_gateway_requests counter
chiron_gateway_requests_total{class="interactive",outcome="routed"} 7.0
chiron_gateway_requests_total{class="batch",outcome="routed"} 3.0
chiron_gateway_requests_total{class="interactive",outcome="refused"} 1.0
chiron_gateway_requests_total{class="batch",outcome="completed"} 3.0
# TYPE chiron_gateway_batch_preemptions counter
chiron_gateway_batch_preemptions_total{target_pod="m-1"} 2.0
chiron_gateway_batch_preemptions_total{target_pod="m-2"} 1.0
"""
    found = count_outcomes(text, {"routed": 0, "refused": 0, "queued": 0, "batch_preemptions": 0})
    assert found == {"routed": 10, "refused": 1, "queued": 0, "batch_preemptions": 3}


def test_endpoints_are_the_ready_pods_of_a_class_with_their_batch_size() -> None:
    def pod(name: str, role: str, ready: bool, serves: tuple[str, ...]) -> dict[str, object]:
        labels = {"chiron.io/role": role, **{f"chiron.io/serves-{c}": "true" for c in serves}}
        status = "True" if ready else "False"
        return {
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {
                    "devcluster.chiron.io/port": "8001",
                    "chiron.io/max-num-seqs": "16",
                },
            },
            "status": {"conditions": [{"type": "Ready", "status": status}]},
        }

    pods = [
        pod("a-mixed", "mixed", True, ("interactive", "batch")),
        pod("a-batch", "batch", True, ("batch",)),
        pod("a-interactive", "interactive", False, ("interactive",)),
    ]
    batch = endpoints_of(pods, RequestClass.BATCH)
    assert [(e.pod, e.seqs) for e in batch] == [("a-batch", 16), ("a-mixed", 16)]
    assert [e.pod for e in endpoints_of(pods, RequestClass.INTERACTIVE)] == ["a-mixed"]


def _result(ttft: float | None, itl: float | None, ok: bool = True) -> InteractiveResult:
    spec = RequestSpec(0, 1.0, RequestClass.INTERACTIVE, 100, 10)
    done = Completion("p", "mixed", 0.0, 1.0, ok, 10, ttft, itl)
    return InteractiveResult(spec, done)


def _batch(status: str = "completed", finalizing_at: int = 990) -> BatchResult:
    """4 requests: 3 in the output file, 1 in the error file; due at 1000."""
    return BatchResult(
        4,
        status,
        total=4,
        completed=3,
        failed=1,
        expires_at=1000,
        finalizing_at=finalizing_at,
        output_lines=3,
        error_lines=1,
    )


def test_the_summary_counts_what_was_measured() -> None:
    record = DemoRecord(DemoPlan())
    record.interactive = [_result(0.5, 0.02), _result(3.0, 0.02), _result(0.5, 0.2)]
    record.interactive.append(InteractiveResult(record.interactive[0].spec, None))
    record.batch_total = 4
    record.batch = _batch()
    record.decisions = {("t", "mixed", "replicas"): {"reason": "InteractiveBackpressureHigh"}}
    record.events = [
        {"type": "Normal", "message": "mixed replicas 1 -> 3: busy"},
        {"type": "Normal", "message": "mixed replicas 3 -> 2: idle"},
        {"type": "Normal", "message": "batch batchSize 32 -> 48: grow"},
        {"type": "Warning", "message": "MetricsUnavailable"},
    ]
    record.gateway = {"routed": 4}
    record.samples = [_sample(t, target) for t, target in ((0.0, 8), (1.0, 8), (2.0, 6), (3.0, 8))]
    summary = summarise(record)
    assert summary["interactive_slo_attainment"] == pytest.approx(0.25)
    assert summary["batch_deadline_attainment"] == pytest.approx(0.75)
    assert (summary["batch_requests"], summary["batch_completed"]) == (4, 3)
    assert summary["batch"]["status"] == "completed"
    assert summary["batch"]["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    assert (summary["batch"]["output_lines"], summary["batch"]["error_lines"]) == (3, 1)
    # Two target moves the gateway applied, one ceiling change that restarted pods.
    assert (summary["scale_ups"], summary["scale_downs"], summary["batch_size_changes"]) == (
        1,
        1,
        3,
    )
    assert summary["batch_size_restarts"] == 1 and summary["gateway"] == {"routed": 4}
    assert summary["decisions"] == {"InteractiveBackpressureHigh": 1}
    assert scaling_actions([]) == {}
    assert math.isfinite(summary["interactive_ttft_p95_s"])


def test_a_batch_never_submitted_meets_no_deadline() -> None:
    record = DemoRecord(DemoPlan())
    record.batch_total = 600
    summary = summarise(record)
    assert summary["batch_deadline_attainment"] == 0.0
    assert summary["batch"]["status"] == "not submitted"


@pytest.mark.parametrize(
    ("batch", "met"),
    [
        (_batch(), 3),  # finished before expires_at: every output line
        (_batch(finalizing_at=1000), 2),  # finished in the deadline's second: what was seen
        (_batch("expired", finalizing_at=0), 3),  # what ran before it expired
        (_batch("in_progress", finalizing_at=0), 2),  # still running when the demo ended
    ],
)
def test_deadline_attainment_counts_output_lines_answered_by_the_deadline(
    batch: BatchResult, met: int
) -> None:
    assert replace(batch, completed_seen_before_expiry=2).met_deadline == met


def test_the_backlog_is_one_valid_batch_input_file() -> None:
    backlog = batch_requests(DemoPlan())
    content = input_file("m", backlog)
    requests = parse_input(content, max_requests=100_000)
    assert check_batch_lines(requests, ENDPOINT, {"m"}) == []
    assert [r.custom_id for r in requests] == [str(r.request_id) for r in backlog]
    assert [r.max_tokens for r in requests] == [r.output_tokens for r in backlog]
    first = json.loads(requests[0].body)
    assert first["chiron_prompt_tokens"] == backlog[0].prompt_tokens
    assert "stream" not in first and "priority" not in first  # the gateway sets both


def test_the_live_table_shows_the_batch_as_the_batch_api_reports_it() -> None:
    progress = BatchProgress(0.0, "in_progress", 600, 250, 3)
    sample = replace(_sample(70.0, 8), batch=progress, batch_queued=300, batch_in_flight=47)
    table = render_table(sample, DemoPlan(), [])
    line = table.splitlines()[-1]
    assert "in_progress" in line and "queued   300" in line and "in flight   47" in line
    assert "done   250/600" in line and "failed    3" in line
    assert "deadline in 47 s" in table  # due 117 s into the timeline
    assert "not submitted" in render_table(_sample(1.0, 8), DemoPlan(), []).splitlines()[-1]


class _Fixed:
    """The gateway at a fixed port (the dev cluster's GatewayEndpoint reads it from the API)."""

    def __init__(self, url: str) -> None:
        self.endpoint = Endpoint("gateway-0", "gateway", int(url.rsplit(":", 1)[1]))

    async def current(self) -> Endpoint | None:
        return self.endpoint


async def test_the_backlog_runs_as_one_batch_through_a_real_gateway(tmp_path: Path) -> None:
    specs = [RequestSpec(i, 0.0, RequestClass.BATCH, 20, 8, deadline_s=30.0) for i in range(12)]
    async with (
        pods(PodSpec(Role.BATCH, 4, ("--time-scale", "20"))) as p,
        gateway(p.infos, store_url=f"sqlite:///{tmp_path}/b.db", batch_poll_s=0.05) as gw,
    ):
        api = GatewayApi(_Fixed(gw.url))
        out = tmp_path / "out"
        backlog = BatchBacklog(api, GATEWAY_MODEL, specs, time.time(), out)
        try:
            await asyncio.wait_for(backlog.run(), timeout=60)
            result = await backlog.conclude()
        finally:
            await api.close()
    assert result.status == "completed"
    assert (result.total, result.completed, result.failed) == (12, 12, 0)
    assert (result.output_lines, result.error_lines, result.met_deadline) == (12, 0, 12)
    assert result.expires_at is not None and result.finalizing_at is not None
    assert result.finalizing_at < result.expires_at
    lines = [json.loads(x) for x in (out / "batch-output.jsonl").read_text().splitlines()]
    assert sorted(int(x["custom_id"]) for x in lines) == list(range(12))
    assert {x["response"]["body"]["usage"]["completion_tokens"] for x in lines} == {8}
    assert (out / "batch-input.jsonl").exists() and not (out / "batch-errors.jsonl").exists()


def _sample(t_s: float, mixed_target: int) -> Sample:
    roles = {
        role: RoleSample(1, 1, 32, mixed_target if role == "mixed" else None, 0.0, 0.0)
        for role in ("interactive", "mixed", "batch")
    }
    return Sample(t_s, roles, 0, 0, 0, 0, None, "", {})


def test_batch_size_moves_count_target_changes_only() -> None:
    assert batch_size_moves([_sample(0.0, 8), _sample(1.0, 8)]) == 0
    assert batch_size_moves([_sample(0.0, 8), _sample(1.0, 4), _sample(2.0, 8)]) == 2
