"""The adapter against a real Prometheus scraping fake vLLM pods that serve the real sample.

One Prometheus and one fake-pod server for the module (the first scrape takes ~5 s). Expected
values are computed from what the pods serve: every counter grows linearly, so a rate is
`delta * scale / PERIOD_S` and a quantile is the interpolation over the bucket deltas.
"""

from __future__ import annotations

import http.server
import math
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from chiron_operator.api.status import MetricNames
from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import PoolSnapshot, itl_window_s
from chiron_operator.metrics import (
    PodFacts,
    PoolMetrics,
    PoolQuery,
    PoolSelector,
    PrometheusSource,
    QueuedGroup,
    RoleFacts,
    build_snapshot,
)
from tests.metrics.fakevllm import (
    LINES,
    PERIOD_S,
    FakePod,
    FakeVllmServer,
    Profile,
    served_rate,
)
from tests.support.prometheus import PrometheusFactory, PrometheusServer, ScrapeTarget, static_job

pytestmark = pytest.mark.timeout(60)

NS: Final = "chiron-test"
WINDOW_S: Final = 4.0
QUANTILE: Final = 0.95
STALENESS_S: Final = 10.0
SCRAPE_S: Final = 1.0  # static_job's default
QUEUE_METRIC: Final = "chiron_test_batch_queue_requests"
QUEUE_QUERY: Final = f'sum by (deadline) ({QUEUE_METRIC}{{pool="llama"}})'
QUEUE_TEXT: Final = f"""# TYPE {QUEUE_METRIC} gauge
{QUEUE_METRIC}{{pool="llama",deadline="1900000600"}} 12
{QUEUE_METRIC}{{pool="llama",deadline="1900000120",shard="a"}} 5
{QUEUE_METRIC}{{pool="llama",deadline="1900000120",shard="b"}} 2
{QUEUE_METRIC}{{pool="llama"}} 3
{QUEUE_METRIC}{{pool="llama",deadline="1900000900"}} 0
{QUEUE_METRIC}{{pool="other",deadline="1900000120"}} 100
"""
# From the sample: 8 KV blocks of 16384 in use while 8 short requests ran.
SAMPLE_KV: Final = 0.0004883110541414881

A = FakePod("llama-interactive-7d9f8-aaaaa", NS, running=8, waiting=24, kv=SAMPLE_KV)
B = FakePod("llama-interactive-7d9f8-bbbbb", NS, running=3, waiting=0, kv=0.42, scale=2.0)
C = FakePod("llama-mixed-6b5c4-ccccc", NS, running=5, waiting=1, kv=0.3, profile=Profile.WHOLE)
D = FakePod("llama-batch-58f7b-ddddd", NS, running=0, waiting=0, kv=0.0, scale=0.0)
E = FakePod("llama-batch-58f7b-eeeee", NS, running=2, waiting=0, kv=0.1, frozen=True)
# Known to Prometheus only (terminated): must not reach the snapshot.
Z = FakePod("llama-interactive-7d9f8-zzzzz", NS, running=1, waiting=0, kv=0.2)
# Known to Kubernetes only: never served.
K_NAME: Final = "llama-batch-58f7b-kkkkk"
# Same name, other namespace; and pool "llama-batch"'s pod, which pool "llama" must not select.
ELSEWHERE = FakePod(A.name, "other", running=99, waiting=99, kv=0.9)
COLLISION = FakePod("llama-batch-interactive-6c7d8-xxxxx", NS, running=77, waiting=77, kv=0.9)
OLD = [
    FakePod("old-interactive-7d9f8-aaaaa", NS, running=4, waiting=1, kv=0.5, legacy=True),
    FakePod("old-mixed-7d9f8-bbbbb", NS, running=6, waiting=0, kv=0.6, legacy=True),
]
ROLL = [
    FakePod("roll-interactive-7d9f8-aaaaa", NS, running=1, waiting=0, kv=0.25),
    FakePod("roll-interactive-5c6d7-bbbbb", NS, running=2, waiting=0, kv=0.35, legacy=True),
]
GOING = FakePod("going-interactive-7d9f8-aaaaa", NS, running=3, waiting=0, kv=0.5)
# Its running gauge steps from 4 to 32 during a test (a load step).
STEP = FakePod("step-mixed-7d9f8-sssss", NS, running=4, waiting=0, kv=0.1)
ROLES = (Role.INTERACTIVE, Role.MIXED, Role.BATCH)
BIG = [
    FakePod(f"big-{ROLES[i % 3].value}-7d9f8-x{i:04d}", NS, running=i, waiting=0, kv=0.01 * i)
    for i in range(12)
]
ALL_PODS = [A, B, C, D, E, Z, ELSEWHERE, COLLISION, *OLD, *ROLL, GOING, STEP, *BIG]


@dataclass
class Env:
    server: FakeVllmServer
    prometheus: PrometheusServer


@pytest.fixture(scope="module")
def env(module_prometheus_factory: PrometheusFactory) -> Iterator[Env]:
    server = FakeVllmServer(ALL_PODS, QUEUE_TEXT)
    try:
        queue = ScrapeTarget(server.address, {"exporter": "queue"}, "/queue/metrics")
        prometheus = module_prometheus_factory([static_job("vllm", [*server.targets(), queue])])
        prometheus.wait_for_first_scrape()
        # Rates over a full window: extrapolation is then exact for linear counters.
        time.sleep(WINDOW_S + 1.5)
        yield Env(server, prometheus)
    finally:
        server.close()


@pytest.fixture(scope="module")
def source(env: Env) -> Iterator[PrometheusSource]:
    with PrometheusSource(env.prometheus.url) as found:
        yield found


def query(pool: str, queue: str | None = None, pod_label: str = "pod") -> PoolQuery:
    selector = PoolSelector(NS, pool, pod_label=pod_label)
    return PoolQuery(
        selector,
        WINDOW_S,
        QUANTILE,
        WINDOW_S,
        queue_query=queue,
        itl_window_s=itl_window_s(SCRAPE_S, WINDOW_S),
    )


def bucket_deltas(histogram: str, pod: FakePod) -> list[tuple[float, float]]:
    """(le, cumulative rate) of a histogram as the pod serves it."""
    found = []
    for line in LINES:
        if line.name == f"{histogram}_bucket":
            le = re.search(r'le="([^"]+)"', line.head)
            assert le is not None
            found.append((float(le.group(1)), served_rate(line.name, pod, le.group(0))))
    return found


def reference_quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """histogram_quantile as Prometheus documents it: linear inside the bucket holding the
    rank, the first bucket starting at 0, the +Inf bucket answered by the highest finite bound."""
    total = cumulative[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return math.nan


def expected_itl(pod: FakePod) -> float:
    return reference_quantile(QUANTILE, bucket_deltas("vllm:inter_token_latency_seconds", pod))


def expected_ttft(pod: FakePod) -> float:
    return reference_quantile(QUANTILE, bucket_deltas("vllm:time_to_first_token_seconds", pod))


def test_reference_values_by_hand() -> None:
    # The load profile's bucket deltas, from the two sample files: ITL 6765 of 6773 <= 10 ms;
    # TTFT 8 in (0.5, 0.75], 16 in (1, 2.5].
    assert expected_itl(A) == pytest.approx(0.01 * QUANTILE * 6773 / 6765)
    assert expected_ttft(A) == pytest.approx(1.0 + 1.5 * (QUANTILE * 24 - 8) / 16)
    assert served_rate("vllm:generation_tokens_total", A) == pytest.approx((9928 - 3131) / 10)


def test_v1_pool_signals_match_what_was_served(source: PrometheusSource) -> None:
    fetched = source.fetch(query("llama"))
    assert fetched.error == ""
    assert fetched.metric_names is MetricNames.V1
    for pod in (A, B, C):
        got = fetched.pods[pod.name]
        assert got.running_requests == pod.running
        # A constant gauge over a linear counter: the gauge over the counter's rate.
        tokens_per_s = served_rate("vllm:generation_tokens_total", pod)
        assert got.mean_itl_s == pytest.approx(pod.running / tokens_per_s, rel=0.03)
        assert got.waiting_requests == pod.waiting
        assert got.kv_cache_usage_ratio == pod.kv
        assert got.generation_tokens_per_s == pytest.approx(
            served_rate("vllm:generation_tokens_total", pod), rel=0.03
        )
        assert got.itl_s == pytest.approx(expected_itl(pod), rel=0.02)
        assert got.ttft_s == pytest.approx(expected_ttft(pod), rel=0.02)
        itl_count = served_rate("vllm:inter_token_latency_seconds_count", pod)
        assert got.itl_observations_per_s == pytest.approx(itl_count, rel=0.03)
        assert 0.0 <= got.sample_age_s < 3.0
        assert got.names is MetricNames.V1


def test_kv_cache_usage_is_a_ratio(source: PrometheusSource) -> None:
    # vLLM's `_perc` is a 0-1 ratio: passed through, not divided by 100.
    assert source.fetch(query("llama")).pods[A.name].kv_cache_usage_ratio == SAMPLE_KV


def test_selection_is_the_pools_namespace_and_pods(source: PrometheusSource) -> None:
    fetched = source.fetch(query("llama"))
    assert set(fetched.pods) == {A.name, B.name, C.name, D.name, E.name, Z.name}
    assert fetched.pods[A.name].running_requests == 8  # not 8 + 99 from the other namespace


def test_idle_pod_is_no_traffic_not_no_data(source: PrometheusSource) -> None:
    idle = source.fetch(query("llama")).pods[D.name]
    assert idle.generation_tokens_per_s == 0.0
    assert idle.itl_observations_per_s == 0.0
    assert idle.ttft_observations_per_s == 0.0
    assert math.isnan(idle.itl_s)
    assert math.isnan(idle.ttft_s)


def test_output_lengths_per_role(source: PrometheusSource) -> None:
    lengths = source.fetch(query("llama")).output_lengths
    # Load profile (A, B x2, Z): 32 requests of 220 tokens per period, all in the +Inf bucket.
    interactive = lengths[Role.INTERACTIVE]
    assert interactive.requests_per_s == pytest.approx(32 * (1 + 2 + 1) / PERIOD_S, rel=0.03)
    assert interactive.mean == pytest.approx(220.0, rel=1e-3)
    assert interactive.std == pytest.approx(0.0, abs=1.0)
    # Whole profile (C): 1 in (5, 10], 24 in (100, 200], 32 above 200; sum 9928 of 57.
    mixed = lengths[Role.MIXED]
    assert mixed.mean == pytest.approx(9928 / 57, rel=1e-3)
    open_mean = max(200.0, (9928 - 1 * 7.5 - 24 * 150.0) / 32)  # 197.5 -> the bound, 200
    center = (1 * 7.5 + 24 * 150.0 + 32 * open_mean) / 57
    variance = (
        1 * ((7.5 - center) ** 2 + 5**2 / 12)
        + 24 * ((150.0 - center) ** 2 + 100**2 / 12)
        + 32 * (open_mean - center) ** 2
    ) / 57
    assert mixed.std == pytest.approx(math.sqrt(variance), rel=1e-3)
    # D is idle, E frozen: no completions on batch pods.
    assert lengths[Role.BATCH].requests_per_s == 0.0
    assert math.isnan(lengths[Role.BATCH].mean)


def test_legacy_pool_reports_legacy(source: PrometheusSource) -> None:
    fetched = source.fetch(query("old"))
    assert fetched.metric_names is MetricNames.LEGACY
    for pod in OLD:
        got = fetched.pods[pod.name]
        assert got.kv_cache_usage_ratio == pod.kv
        assert got.itl_s == pytest.approx(expected_itl(pod), rel=0.02)
        assert got.names is MetricNames.LEGACY


def test_rolling_upgrade_reports_mixed(source: PrometheusSource) -> None:
    fetched = source.fetch(query("roll"))
    assert fetched.metric_names is MetricNames.MIXED
    new, old = ROLL
    assert fetched.pods[new.name].names is MetricNames.V1
    assert fetched.pods[old.name].names is MetricNames.LEGACY
    for pod in ROLL:
        assert fetched.pods[pod.name].kv_cache_usage_ratio == pod.kv
        assert fetched.pods[pod.name].itl_s == pytest.approx(expected_itl(pod), rel=0.02)


def test_query_count_is_constant_in_pod_count(source: PrometheusSource) -> None:
    two = source.fetch(query("old"))
    twelve = source.fetch(query("big"))
    assert (len(two.pods), len(twelve.pods)) == (2, 12)
    assert two.queries == twelve.queries == 7
    with_queue = source.fetch(query("big", QUEUE_QUERY))
    assert with_queue.queries == 8


def test_batch_queue_groups_by_deadline(source: PrometheusSource) -> None:
    fetched = source.fetch(query("llama", QUEUE_QUERY))
    assert fetched.queue is not None
    assert fetched.queue.error == ""
    assert fetched.queue.groups == (
        QueuedGroup(1900000120.0, 7),
        QueuedGroup(1900000600.0, 12),
        QueuedGroup(None, 3),
    )


def facts() -> tuple[dict[Role, RoleFacts], list[PodFacts]]:
    roles = {
        Role.INTERACTIVE: RoleFacts(2, 2, 0, 32),
        Role.MIXED: RoleFacts(1, 1, 0, 64),
        Role.BATCH: RoleFacts(3, 2, 1, 256),
    }
    pods = [
        PodFacts(A.name, Role.INTERACTIVE, True, 32),
        PodFacts(B.name, Role.INTERACTIVE, True, 32),
        PodFacts(C.name, Role.MIXED, True, 64),
        PodFacts(D.name, Role.BATCH, True, 256),
        PodFacts(E.name, Role.BATCH, True, 256),
        PodFacts(K_NAME, Role.BATCH, False, 256),
    ]
    return roles, pods


def snapshot(fetched: PoolMetrics, now_s: float | None = None) -> PoolSnapshot:
    roles, pods = facts()
    return build_snapshot(
        time.time() if now_s is None else now_s,
        roles=roles,
        pods=pods,
        metrics=fetched,
        staleness_s=STALENESS_S,
        batch_deadline_s=3600.0,
    )


def test_snapshot_joins_kubernetes_facts(source: PrometheusSource) -> None:
    fetched = source.fetch(query("llama", QUEUE_QUERY))
    now_s = time.time()
    snap = snapshot(fetched, now_s)
    assert snap.metrics_error == ""
    assert {p.name for p in snap.all_pods()} == {A.name, B.name, C.name, D.name, E.name, K_NAME}
    assert snap.role(Role.BATCH).starting_replicas == 1
    pods = {p.name: p for p in snap.all_pods()}
    assert pods[A.name].running_requests == 8
    assert pods[A.name].itl_s == pytest.approx(expected_itl(A), rel=0.02)
    unknown = pods[K_NAME]
    assert math.isnan(unknown.running_requests)
    assert unknown.sample_age_s == math.inf
    # E's samples carry a timestamp 30 s old: stale, so NaN, with its true age.
    assert fetched.pods[E.name].running_requests == 2
    assert math.isnan(pods[E.name].running_requests)
    assert pods[E.name].sample_age_s >= 30.0
    assert snap.metrics_age_s < 3.0
    queue = snap.batch_queue
    assert [g.queued_requests for g in queue.groups] == [3, 7, 12]  # default deadline first
    assert queue.groups[0].deadline_s == pytest.approx(now_s + 3600.0)
    # Batch pods completed nothing: lengths from the mixed pod.
    assert queue.output_tokens_mean == pytest.approx(9928 / 57, rel=1e-3)
    assert queue.sample_age_s < 1.0


def test_failed_queue_query_fails_only_the_queue(source: PrometheusSource) -> None:
    fetched = source.fetch(query("llama", "sum by (deadline) ("))
    assert fetched.error == ""
    assert fetched.queue is not None
    # The status code and Prometheus's errorType (an enum), never the server's free text.
    assert (
        fetched.queue.error == "batch_queue query failed: HTTP 400 (Prometheus errorType bad_data)"
    )
    assert "parse error" not in fetched.queue.error
    snap = snapshot(fetched)
    assert snap.batch_queue.sample_age_s == math.inf
    assert snap.role(Role.INTERACTIVE).pods[0].running_requests == 8


def test_failed_pod_query_fails_the_whole_fetch(source: PrometheusSource) -> None:
    # A label name PromQL cannot parse: Prometheus answers 400 to the first query.
    fetched = source.fetch(query("llama", QUEUE_QUERY, pod_label="bad-label"))
    assert fetched.error.startswith("running query failed: ")
    assert fetched.queries == 1
    assert not fetched.pods
    snap = snapshot(fetched)
    assert snap.metrics_error == fetched.error
    assert all(math.isnan(p.running_requests) for p in snap.all_pods())


def _fetch_until(
    source: PrometheusSource,
    pool: str,
    done: Callable[[PoolMetrics], bool],
    timeout_s: float = 5.0,
) -> PoolMetrics:
    deadline = time.monotonic() + timeout_s
    fetched = source.fetch(query(pool))
    while not done(fetched) and time.monotonic() < deadline:
        time.sleep(0.2)
        fetched = source.fetch(query(pool))
    return fetched


def test_mean_itl_follows_a_load_step_within_its_short_range(source: PrometheusSource) -> None:
    tokens_per_s = served_rate("vllm:generation_tokens_total", STEP)
    before = source.fetch(query("step")).pods[STEP.name].mean_itl_s
    assert before == pytest.approx(4 / tokens_per_s, rel=0.03)
    STEP.running = 32
    seen: list[float] = []

    def settled(fetched: PoolMetrics) -> bool:
        seen.append(fetched.pods[STEP.name].mean_itl_s)
        return seen[-1] == pytest.approx(32 / tokens_per_s, rel=0.10)

    # Two 1 s scrapes hold only the new load: settled within a few scrapes (a generous limit,
    # Prometheus scrapes late on a busy machine), never read beyond what the new load explains.
    # 10%: over two samples, rate()'s extrapolation to the range's edges moves with the
    # scrapes' timing jitter (a few percent over a window of many samples).
    assert settled(_fetch_until(source, "step", settled, timeout_s=15.0))
    known = [v for v in seen if math.isfinite(v)]  # a late scrape can leave one sample: NaN
    assert all(4 / tokens_per_s * 0.9 <= v <= 32 / tokens_per_s * 1.1 for v in known), seen
    assert source.fetch(query("step")).queries == 7  # a part of the running query


def _gone(fetched: PoolMetrics) -> bool:
    pod = fetched.pods.get(GOING.name)
    return pod is None or (math.isnan(pod.running_requests) and pod.sample_age_s == math.inf)


def test_pod_that_stops_being_served_goes_missing(env: Env, source: PrometheusSource) -> None:
    assert source.fetch(query("going")).pods[GOING.name].running_requests == 3
    GOING.served = False
    deadline = time.monotonic() + 5.0
    fetched = source.fetch(query("going"))
    while not _gone(fetched) and time.monotonic() < deadline:
        time.sleep(0.3)
        fetched = source.fetch(query("going"))
    # The failed scrape marks the pod's series stale at once: no current sample, age inf
    # (its rates may linger for a window, which the snapshot must not use).
    assert _gone(fetched)
    assert fetched.metric_names is None
    snap = build_snapshot(
        time.time(),
        roles={Role.INTERACTIVE: RoleFacts(1, 1, 0, 32)},
        pods=[PodFacts(GOING.name, Role.INTERACTIVE, True, 32)],
        metrics=fetched,
        staleness_s=STALENESS_S,
        batch_deadline_s=3600.0,
    )
    pod = snap.role(Role.INTERACTIVE).pods[0]
    assert math.isnan(pod.running_requests)
    assert math.isnan(pod.generation_tokens_per_s)
    assert pod.sample_age_s == math.inf
    assert snap.metrics_age_s == math.inf


class _Proxy:
    """A loopback reverse proxy in front of Prometheus, as an auth proxy would stand there:
    it demands a bearer token and, given a certificate, serves HTTPS."""

    def __init__(self, upstream: str, token: str, tls: tuple[Path, Path] | None = None) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_error(401, "bearer token required")
                    return
                proxy.authorized += 1
                with urllib.request.urlopen(upstream + self.path, timeout=5) as answer:
                    payload = answer.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        self.authorized = 0
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.http.socket = context.wrap_socket(self.http.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def test_bearer_token_is_sent(env: Env) -> None:
    proxy = _Proxy(env.prometheus.url, "s3cret")
    try:
        with PrometheusSource(proxy.url, bearer_token="s3cret") as authorized:
            fetched = authorized.fetch(query("old"))
        assert fetched.error == ""
        assert len(fetched.pods) == 2
        assert proxy.authorized == fetched.queries
        with PrometheusSource(proxy.url) as anonymous:
            refused = anonymous.fetch(query("old"))
        assert "401" in refused.error
    finally:
        proxy.close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself (openssl), and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    output = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject, *output],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verification_is_configurable(env: Env, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    proxy = _Proxy(env.prometheus.url, "t", tls=(cert, key))
    try:
        outcomes = {}
        for verify in (True, str(cert), False):
            with PrometheusSource(proxy.url, bearer_token="t", verify_tls=verify) as source:
                outcomes[str(verify)] = source.fetch(query("old")).error
        assert outcomes[str(cert)] == outcomes["False"] == ""
        assert "cannot connect" in outcomes["True"]  # an unknown CA fails verification
        assert "SSLError" in outcomes["True"]
    finally:
        proxy.close()


def test_prometheus_stopped_means_error_and_nan(prometheus_factory: PrometheusFactory) -> None:
    prometheus = prometheus_factory([])
    with PrometheusSource(prometheus.url, timeout_s=2.0) as source:
        answered = source.fetch(query("llama"))
        assert answered.error == ""
        assert not answered.pods
        prometheus.stop()
        failed = source.fetch(query("llama"))
    assert failed.error.startswith("running query failed: cannot connect to ")
    assert failed.queries == 1
    snap = snapshot(failed)
    assert snap.metrics_error == failed.error
    assert snap.metrics_age_s == math.inf
    for pod in snap.all_pods():
        for value in (pod.running_requests, pod.waiting_requests, pod.kv_cache_usage_ratio):
            assert math.isnan(value)
        assert pod.sample_age_s == math.inf
    assert snap.batch_queue.sample_age_s == math.inf
