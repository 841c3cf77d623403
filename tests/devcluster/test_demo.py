"""The demo's parts that need no running cluster: its pool, its traffic, its gateway, its summary.

The whole demo (`make demo`, about 3 minutes) runs the real operator, Prometheus and emulated
pods; it is not part of `make test`. These tests pin what it is made of.
"""

from __future__ import annotations

import math

import pytest

from chiron_operator.api import parse_spec, validate_spec
from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.devcluster.demo.cli import DRAIN_GRACE_CAP_S
from chiron_operator.devcluster.demo.clients import InteractiveResult
from chiron_operator.devcluster.demo.report import (
    DemoRecord,
    RoleSample,
    Sample,
    batch_size_moves,
    scaling_actions,
    summarise,
)
from chiron_operator.devcluster.demo.run import count_outcomes
from chiron_operator.devcluster.demo.traffic import Completion, endpoints_of, gateway_endpoint
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
from chiron_operator.sim.requests import RequestSpec


@pytest.mark.parametrize("time_scale", [1.0, 4.0])
def test_the_demo_pool_is_valid_and_its_slos_follow_the_time_scale(time_scale: float) -> None:
    plan = DemoPlan(time_scale=time_scale)
    spec = pool_spec(plan, "http://127.0.0.1:9090")
    assert validate_spec(spec) == []
    assert spec["slo"]["interactiveTtftS"] == pytest.approx(2.0 / time_scale)
    assert spec["slo"]["interactiveItlS"] == pytest.approx(0.1 / time_scale)
    assert "chiron_gateway_batch_queued_requests" in spec["batchQueue"]["queuedRequestsQuery"]
    assert parse_spec(spec).gateway.enabled


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


def test_the_summary_counts_what_was_measured() -> None:
    record = DemoRecord(DemoPlan())
    record.interactive = [_result(0.5, 0.02), _result(3.0, 0.02), _result(0.5, 0.2)]
    record.interactive.append(InteractiveResult(record.interactive[0].spec, None))
    record.batch_total = 2
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
    assert summary["batch_deadline_attainment"] == 0.0
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


def _sample(t_s: float, mixed_target: int) -> Sample:
    roles = {
        role: RoleSample(1, 1, 32, mixed_target if role == "mixed" else None, 0.0, 0.0)
        for role in ("interactive", "mixed", "batch")
    }
    return Sample(t_s, roles, 0, 0, 0, 0, 0, 0, "", {})


def test_batch_size_moves_count_target_changes_only() -> None:
    assert batch_size_moves([_sample(0.0, 8), _sample(1.0, 8)]) == 0
    assert batch_size_moves([_sample(0.0, 8), _sample(1.0, 4), _sample(2.0, 8)]) == 2
