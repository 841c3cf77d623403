"""The plain-Prometheus scrape jobs (deploy/kustomize/plain-prometheus) do what the PodMonitor and
ServiceMonitor do, checked on a real Prometheus server.

Debian's Prometheus build has no Kubernetes service discovery, so each job's
`kubernetes_sd_configs` is replaced by static targets that carry the `__meta_kubernetes_*` labels
Kubernetes discovery would attach. The jobs' own relabelling then runs unchanged: the vLLM pod's
series must arrive with namespace, pod, pool and role; other pods, other ports and finished pods
must be dropped; the gateway's series must arrive with the gateway pod's namespace, pod and
pool next to their own `target_pod`; the operator's series must keep their own `namespace` (the
pool's); and the chart's recording rules must evaluate on the result.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.chart.support import ROOT, promtool, run
from tests.chart.support import prometheus as prometheus_binary

PLAIN = ROOT / "deploy" / "kustomize" / "plain-prometheus"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
VLLM_BODY = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 5.0
"""
GATEWAY_BODY = """\
# TYPE chiron_gateway_pod_cap_seqs gauge
chiron_gateway_pod_cap_seqs{target_pod="chat-mixed-7d9c8-x2x9z",target_role="mixed"} 16.0
"""
OPERATOR_BODY = """\
# TYPE chiron_slo_slack_ratio gauge
chiron_slo_slack_ratio{namespace="llm",pool="chat",slo="ttft"} -0.1
"""
VLLM_POD = {
    "__meta_kubernetes_namespace": "llm",
    "__meta_kubernetes_pod_name": "chat-mixed-7d9c8-x2x9z",
    "__meta_kubernetes_pod_container_name": "vllm",
    "__meta_kubernetes_pod_container_port_name": "http",
    "__meta_kubernetes_pod_phase": "Running",
    "__meta_kubernetes_pod_label_app_kubernetes_io_name": "vllm",
    "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name": "true",
    "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by": "chiron-operator",
    "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_managed_by": "true",
    "__meta_kubernetes_pod_label_chiron_io_pool": "chat",
    "__meta_kubernetes_pod_labelpresent_chiron_io_pool": "true",
    "__meta_kubernetes_pod_label_chiron_io_role": "mixed",
    "__meta_kubernetes_pod_labelpresent_chiron_io_role": "true",
}
GATEWAY_POD = {
    "__meta_kubernetes_namespace": "llm",
    "__meta_kubernetes_pod_name": "chat-gateway-5c4b7-q8w2e",
    "__meta_kubernetes_pod_container_name": "gateway",
    "__meta_kubernetes_pod_container_port_name": "http",
    "__meta_kubernetes_pod_phase": "Running",
    "__meta_kubernetes_pod_label_app_kubernetes_io_name": "chiron-gateway",
    "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name": "true",
    "__meta_kubernetes_pod_label_app_kubernetes_io_component": "gateway",
    "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_component": "true",
    "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by": "chiron-operator",
    "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_managed_by": "true",
    "__meta_kubernetes_pod_label_chiron_io_pool": "chat",
    "__meta_kubernetes_pod_labelpresent_chiron_io_pool": "true",
}
OPERATOR_ENDPOINT = {
    "__meta_kubernetes_namespace": "chiron-system",
    "__meta_kubernetes_pod_name": "chiron-operator-6f7d9-abcde",
    "__meta_kubernetes_service_name": "chiron-operator-metrics",
    "__meta_kubernetes_endpointslice_port_name": "http-metrics",
    "__meta_kubernetes_service_label_app_kubernetes_io_name": "chiron-operator",
    "__meta_kubernetes_service_labelpresent_app_kubernetes_io_name": "true",
    "__meta_kubernetes_service_label_app_kubernetes_io_instance": "chiron-operator",
    "__meta_kubernetes_service_labelpresent_app_kubernetes_io_instance": "true",
    "__meta_kubernetes_service_label_app_kubernetes_io_component": "metrics",
    "__meta_kubernetes_service_labelpresent_app_kubernetes_io_component": "true",
}


class _Handler(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, str]] = {
        "/vllm": VLLM_BODY,
        "/gateway": GATEWAY_BODY,
        "/operator": OPERATOR_BODY,
    }

    def do_GET(self) -> None:
        body = self.bodies.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def targets() -> Iterator[str]:
    """A loopback server with a vLLM pod's /metrics at /vllm and the operator's at /operator."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def static_job(job: dict[str, Any], address: str, path: str, groups: list[dict[str, str]]) -> Any:
    """`job` with discovery replaced by static targets carrying Kubernetes' meta labels."""
    job = dict(job)
    job.pop("kubernetes_sd_configs")
    job["scrape_interval"] = job["scrape_timeout"] = "1s"
    job["static_configs"] = [
        {"targets": [address], "labels": {**labels, "__metrics_path__": path}} for labels in groups
    ]
    return job


def jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((PLAIN / "scrape-configs.yaml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_discovery_is_what_the_monitors_select() -> None:
    found = jobs()
    assert set(found) == {"chiron-operator-metrics", "chiron-vllm", "chiron-gateway"}
    assert found["chiron-vllm"]["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert found["chiron-gateway"]["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert found["chiron-operator-metrics"]["kubernetes_sd_configs"] == [
        {"role": "endpointslice", "namespaces": {"names": ["chiron-system"]}}
    ]
    assert found["chiron-operator-metrics"]["honor_labels"] is True


def query(url: str, expr: str) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(url: str, expr: str, deadline: float) -> list[dict[str, Any]]:
    while True:
        found = query(url, expr)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


@pytest.fixture(scope="module")
def prometheus(targets: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Prometheus running the plain jobs and the chart's rules against `targets`."""
    binary = prometheus_binary()
    folder = tmp_path_factory.mktemp("prometheus")
    found = jobs()
    dropped = [
        {**VLLM_POD, "__meta_kubernetes_pod_label_app_kubernetes_io_name": "other-app"},
        {**VLLM_POD, "__meta_kubernetes_pod_container_port_name": "grpc"},
        {**VLLM_POD, "__meta_kubernetes_pod_phase": "Succeeded"},
        {key: value for key, value in VLLM_POD.items() if "managed_by" not in key},
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PLAIN / "chiron.rules.yaml")],
        "scrape_configs": [
            static_job(found["chiron-vllm"], targets, "/vllm", [VLLM_POD, *dropped]),
            # The vLLM pod is offered to the gateway job too: it must not scrape it.
            static_job(found["chiron-gateway"], targets, "/gateway", [GATEWAY_POD, VLLM_POD]),
            static_job(
                found["chiron-operator-metrics"],
                targets,
                "/operator",
                [
                    OPERATOR_ENDPOINT,
                    {**OPERATOR_ENDPOINT, "__meta_kubernetes_endpointslice_port_name": "other"},
                ],
            ),
        ],
    }
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    checked = run([promtool(), "check", "config", str(path)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_vllm_series_gain_namespace_pod_pool_and_role(prometheus: str) -> None:
    found = wait_for(prometheus, "vllm:num_requests_running", time.monotonic() + 15)
    assert [s["metric"] for s in found] == [
        {
            "__name__": "vllm:num_requests_running",
            "container": "vllm",
            "engine": "0",
            "instance": found[0]["metric"]["instance"],
            "job": "chiron-vllm",
            "model_name": "meta-llama/Llama-3.1-8B-Instruct",
            "namespace": "llm",
            "pod": "chat-mixed-7d9c8-x2x9z",
            "pool": "chat",
            "role": "mixed",
        }
    ]
    # Only the one matching target is scraped: the other app, the other port, the finished pod
    # and the pod not managed by the operator are dropped by the job's relabelling.
    up = query(prometheus, 'up{job="chiron-vllm"}')
    assert len(up) == 1


def test_gateway_series_gain_namespace_pod_and_pool(prometheus: str) -> None:
    found = wait_for(prometheus, "chiron_gateway_pod_cap_seqs", time.monotonic() + 15)
    assert [s["metric"] for s in found] == [
        {
            "__name__": "chiron_gateway_pod_cap_seqs",
            "container": "gateway",
            "instance": found[0]["metric"]["instance"],
            "job": "chiron-gateway",
            "namespace": "llm",
            "pod": "chat-gateway-5c4b7-q8w2e",
            "pool": "chat",
            "target_pod": "chat-mixed-7d9c8-x2x9z",
            "target_role": "mixed",
        }
    ]
    assert len(query(prometheus, 'up{job="chiron-gateway"}')) == 1


def test_operator_series_keep_the_pools_namespace(prometheus: str) -> None:
    found = wait_for(prometheus, "chiron_slo_slack_ratio", time.monotonic() + 15)
    assert len(found) == 1
    assert found[0]["metric"]["namespace"] == "llm"
    assert found[0]["metric"]["pool"] == "chat"
    up = query(prometheus, 'up{job="chiron-operator-metrics", namespace="chiron-system"}')
    assert [s["value"][1] for s in up] == ["1"]
    # What ChironOperatorDown watches is there, so it stays silent.
    assert query(prometheus, 'absent(up{job="chiron-operator-metrics"} == 1)') == []


def test_recording_rules_evaluate_on_the_scraped_series(prometheus: str) -> None:
    expr = 'namespace_pool_role:vllm_num_requests_waiting:sum{namespace="llm", pool="chat"}'
    found = wait_for(prometheus, expr, time.monotonic() + 15)
    assert [(s["metric"]["role"], s["value"][1]) for s in found] == [("mixed", "5")]


def test_plain_files_pass_promtool(tmp_path: Path) -> None:
    result = run([promtool(), "check", "rules", str(PLAIN / "chiron.rules.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr
