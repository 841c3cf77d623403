"""A pool's Prometheus is the tenant's choice: what the client refuses, hides and cuts short.

Real servers on 127.0.0.1 (a recording HTTP server, a dripping one, a real Prometheus); the
refused non-loopback addresses are refused before any packet leaves (literal addresses resolve
to themselves), so no traffic goes anywhere but loopback.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import ip_address, ip_network

import pytest
import requests
from pydantic import ValidationError

from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.metrics.batch_queue import PROMQL_REFUSED
from chiron_operator.metrics.destination import (
    DestinationPolicy,
    DestinationRefusedError,
    check_token_url,
    token_url_allowed,
)
from chiron_operator.metrics.promql import PoolQuery, PoolSelector
from chiron_operator.metrics.results import PoolMetrics
from chiron_operator.metrics.source import PrometheusSource
from chiron_operator.metrics.transport import Connections, GuardedAdapter, guarded_session
from tests.metrics.recorder import EMPTY_VECTOR, Answer, Recorder, reply
from tests.support.prometheus import (
    PrometheusFactory,
    PrometheusServer,
    ScrapeTarget,
    static_job,
)

LOOPBACK = DestinationPolicy((ip_network("127.0.0.0/8"),))
STRICT = DestinationPolicy()


def query() -> PoolQuery:
    return PoolQuery(PoolSelector("llm", "llama"), 30.0, 0.99, 30.0)


def test_redirect_is_an_error_and_never_followed(
    servers: Callable[[Answer], Recorder],
) -> None:
    target = servers(reply(200, EMPTY_VECTOR))
    redirector = servers(reply(302, "", {"Location": f"{target.url}/api/v1/query?query=up"}))
    with PrometheusSource(redirector.url, bearer_token="op", destinations=LOOPBACK) as source:
        fetched = source.fetch(query())
    assert fetched.error.startswith("running query failed: HTTP 302: a redirect, not followed")
    assert len(redirector.requests) == 1
    assert target.requests == []  # nothing followed the redirect, token or not


def test_a_server_error_body_never_reaches_the_error(
    servers: Callable[[Answer], Recorder],
) -> None:
    secret = "SECRET-db-password-hunter2"
    bodies = {
        500: json.dumps({"status": "error", "errorType": "internal", "error": secret}),
        502: f"<html>{secret}</html>",
        503: json.dumps({"status": "error", "errorType": secret, "error": secret}),
    }
    for status, body in bodies.items():
        server = servers(reply(status, body))
        with PrometheusSource(server.url, destinations=LOOPBACK) as source:
            error = source.fetch(query()).error
        assert secret not in error
        assert error.startswith(f"running query failed: HTTP {status}")
    internal = servers(reply(500, bodies[500]))
    with PrometheusSource(internal.url, destinations=LOOPBACK) as source:
        assert source.fetch(query()).error == (
            "running query failed: HTTP 500 (Prometheus errorType internal)"
        )


def test_a_malformed_success_body_never_reaches_the_error(
    servers: Callable[[Answer], Recorder],
) -> None:
    secret = "SECRET-token-abc"
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": secret}}
    for body in (json.dumps(matrix), f"not json {secret}", json.dumps([secret])):
        server = servers(reply(200, body))
        with PrometheusSource(server.url, destinations=LOOPBACK) as source:
            error = source.fetch(query()).error
        assert error.startswith("running query failed: ")
        assert secret not in error


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("localhost", "a loopback address"),
        ("[::ffff:127.0.0.1]", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("[fe80::1]", "a link-local address"),
        ("0.0.0.0", "the unspecified address"),
    ],
)
def test_private_targets_are_refused_without_the_allow_flag(
    servers: Callable[[Answer], Recorder], host: str, why: str
) -> None:
    server = servers(reply(200, EMPTY_VECTOR))
    port = server.url.rsplit(":", 1)[1]
    with PrometheusSource(f"http://{host}:{port}", destinations=STRICT) as source:
        fetched = source.fetch(query())
    assert why in fetched.error
    assert "--prometheus-allow-cidr" in fetched.error
    assert fetched.queries == 0
    assert server.requests == []


def test_the_allow_flag_lets_loopback_through(servers: Callable[[Answer], Recorder]) -> None:
    server = servers(reply(200, EMPTY_VECTOR))
    with PrometheusSource(server.url, destinations=LOOPBACK) as source:
        fetched = source.fetch(query())
    assert fetched.error == ""
    assert len(server.requests) == fetched.queries == 7


def test_the_api_server_address_is_refused() -> None:
    policy = DestinationPolicy(api_server_addresses=(ip_address("10.96.0.1"),))
    with pytest.raises(DestinationRefusedError, match="the Kubernetes API server's address"):
        policy.check_url("https://10.96.0.1:443")
    policy.check_url("http://10.96.0.2:9090")  # a cluster address is not refused
    allowed = DestinationPolicy((ip_network("10.96.0.1/32"),), (ip_address("10.96.0.1"),))
    allowed.check_url("https://10.96.0.1:443")


def test_the_connected_address_is_checked_again(servers: Callable[[Answer], Recorder]) -> None:
    """The check at connect time: a name that resolved elsewhere before connects nowhere."""
    server = servers(reply(200, EMPTY_VECTOR))
    adapter = GuardedAdapter(Connections(STRICT))
    with (
        guarded_session(adapter, True) as session,
        pytest.raises(DestinationRefusedError, match="loopback"),
    ):
        session.get(f"{server.url}/api/v1/query", timeout=5)
    assert server.requests == []


def test_token_urls_compare_parsed_urls_not_prefixes() -> None:
    allowed = ["http://prom.monitoring.svc:9090", "https://thanos.example/tenant-a/"]
    assert token_url_allowed("http://prom.monitoring.svc:9090", allowed)
    assert token_url_allowed("http://PROM.monitoring.svc:9090/", allowed)
    assert token_url_allowed("https://thanos.example:443/tenant-a/prometheus", allowed)
    refused = [
        "http://prom.monitoring.svc:9090.attacker.example",
        "http://prom.monitoring.svc:9091",
        "https://prom.monitoring.svc:9090",
        "http://prom.monitoring.svc",
        "https://thanos.example/tenant-ab",
        "https://thanos.example/",
        "http://user@prom.monitoring.svc:9090",
        "http://prom.monitoring.svc:9090/?x=1",
        "http://prom.monitoring.svc:99999",
    ]
    for url in refused:
        assert not token_url_allowed(url, allowed), url
    for bad in ("ftp://prom", "http://u:p@prom", "http://prom?x", "prom:9090"):
        with pytest.raises(ValueError, match=r"expected|no user info"):
            check_token_url(bad)


class Dripper:
    """Answers 200 and then one byte of its body per second, for as long as it is read."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed_after_s: list[float] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        started = time.monotonic()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            conn.sendall(b"Content-Length: 100000\r\n\r\n")
            try:
                for _ in range(120):
                    conn.sendall(b" ")
                    time.sleep(0.5)
            except OSError:
                self.closed_after_s.append(time.monotonic() - started)

    def close(self) -> None:
        self.sock.close()


def test_a_dripping_server_is_cut_at_the_total_deadline() -> None:
    dripper = Dripper()
    try:
        # Each byte arrives well within the 5 s read timeout: only the deadline can end it.
        with PrometheusSource(
            dripper.url, timeout_s=5.0, deadline_s=2.0, destinations=LOOPBACK
        ) as source:
            started = time.monotonic()
            fetched = source.fetch(query())
            elapsed_s = time.monotonic() - started
        assert 1.9 <= elapsed_s < 3.0
        assert fetched.error == (
            f"running query failed: no complete answer from {dripper.url} within the 2 s deadline"
        )
        assert fetched.queries == 1
    finally:
        dripper.close()


def test_a_silent_server_is_cut_at_the_total_deadline() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)  # never accepts
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with PrometheusSource(url, timeout_s=30.0, deadline_s=1.0, destinations=LOOPBACK) as source:
            started = time.monotonic()
            fetched = source.fetch(query())
            assert time.monotonic() - started < 2.0
            assert "within the 1 s deadline" in fetched.error
            # The session is usable after a cut: the next fetch gets its own deadline.
            started = time.monotonic()
            assert "within the 1 s deadline" in source.fetch(query()).error
            assert time.monotonic() - started < 2.0
    finally:
        listener.close()


def test_the_environment_proxy_is_not_used(
    servers: Callable[[Answer], Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = servers(reply(200, EMPTY_VECTOR))
    target = servers(reply(200, EMPTY_VECTOR))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    with PrometheusSource(target.url, destinations=LOOPBACK) as source:
        assert source.fetch(query()).error == ""
    assert proxy.requests == []
    assert len(target.requests) == 7
    assert requests.Session().trust_env  # requests' own default, which the source turns off


def exposition(handler: http.server.BaseHTTPRequestHandler) -> None:
    """`tenant_queue` per deadline: one set of series at /a, another at /b."""
    deadline = {"/a": 1000, "/b": 2000}[handler.path]
    body = f'tenant_queue{{deadline="{deadline}",pool="p"}} {deadline // 100}\n'.encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain; version=0.0.4")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture(scope="module")
def two_tenants(
    module_prometheus_factory: PrometheusFactory,
) -> Iterator[PrometheusServer]:
    """A real Prometheus holding `tenant_queue` in namespaces tenant-a and tenant-b."""
    exporter = Recorder(exposition)
    address = exporter.url.removeprefix("http://")
    targets = [
        ScrapeTarget(address, {"namespace": "tenant-a"}, metrics_path="/a"),
        ScrapeTarget(address, {"namespace": "tenant-b"}, metrics_path="/b"),
    ]
    prometheus = module_prometheus_factory([static_job("exporter", targets)])
    prometheus.wait_for_first_scrape()
    try:
        yield prometheus
    finally:
        exporter.close()


def tenant_query(batch_queue: dict[str, object], *, allow_promql: bool) -> PoolQuery:
    spec = LLMServingPoolSpec.model_validate(
        {
            "model": "m",
            "template": {"image": "vllm/vllm-openai:v0.11.0"},
            "prometheus": {"url": "http://unused:9090"},
            "batchQueue": batch_queue,
        }
    )
    return PoolQuery.from_spec("tenant-a", "llama", spec, allow_promql=allow_promql)


def deadlines(fetched: PoolMetrics) -> list[tuple[float | None, int]]:
    assert fetched.error == "", fetched.error
    assert fetched.queue is not None
    assert fetched.queue.error == "", fetched.queue.error
    return [(g.deadline_s, g.queued_requests) for g in fetched.queue.groups]


def test_a_structured_queue_reads_only_the_pools_namespace(two_tenants: PrometheusServer) -> None:
    metric = {"metric": {"name": "tenant_queue", "matchers": {"pool": "p"}}}
    # An attempt to close the string and add a selector of its own is only a value to match.
    injected = {"metric": {"name": "tenant_queue", "matchers": {"pool": 'p"} or tenant_queue{x="'}}}
    with PrometheusSource(two_tenants.url, destinations=LOOPBACK) as source:
        own = source.fetch(tenant_query(metric, allow_promql=False))
        nothing = source.fetch(tenant_query(injected, allow_promql=False))
        # What raw PromQL could do, which is why it needs the admin's opt-in.
        raw = {"queuedRequestsQuery": "sum by (deadline) (tenant_queue)"}
        everything = source.fetch(tenant_query(raw, allow_promql=True))
    assert deadlines(own) == [(1000.0, 10)]
    assert deadlines(nothing) == []
    assert deadlines(everything) == [(1000.0, 10), (2000.0, 20)]


def test_a_structured_queue_cannot_name_another_namespace() -> None:
    for label in ("namespace", "__name__", "bad-label"):
        with pytest.raises(ValidationError, match=r"keys must be label names"):
            tenant_query(
                {"metric": {"name": "tenant_queue", "matchers": {label: "tenant-b"}}},
                allow_promql=False,
            )
    with pytest.raises(ValidationError, match="String should match pattern"):
        tenant_query({"metric": {"name": "q{namespace='b'}"}}, allow_promql=False)
    with pytest.raises(ValidationError, match="exactly one of"):
        tenant_query({"metric": {"name": "q"}, "queuedRequestsQuery": "sum(q)"}, allow_promql=False)


def test_raw_promql_is_refused_without_the_opt_in(two_tenants: PrometheusServer) -> None:
    raw = {"queuedRequestsQuery": "sum by (deadline) (tenant_queue)"}
    refused = tenant_query(raw, allow_promql=False)
    assert refused.queue_query is None
    assert refused.queue_refusal == PROMQL_REFUSED
    assert not refused.gateway_batch  # not the gateway's queue either: no queue at all
    with PrometheusSource(two_tenants.url, destinations=LOOPBACK) as source:
        fetched = source.fetch(refused)
    assert fetched.error == ""
    assert fetched.queries == 7  # the pods' signals, and no batch-queue query
    assert fetched.queue is not None
    assert fetched.queue.groups == ()
    assert fetched.queue.error == PROMQL_REFUSED
    assert "spec.batchQueue.queuedRequestsQuery" in PROMQL_REFUSED
    assert "--allow-pool-promql" in PROMQL_REFUSED
    assert tenant_query(raw, allow_promql=True).queue_query == raw["queuedRequestsQuery"]
