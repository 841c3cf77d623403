"""The gateway's batch signals through a real Prometheus: the queue per deadline and the
output-length statistics of completed batch requests, summed over the pool's gateway replicas.

A tiny exporter stands in for gateway pods. Each serves a fixed queue and counters that grow
linearly in time (requests of known lengths completing at a steady rate), so the window's
increase, the mean and the spread are known exactly.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

import pytest

from chiron_operator.core.enums import Role
from chiron_operator.core.snapshot import BatchGroup, itl_window_s
from chiron_operator.metrics import (
    PoolQuery,
    PoolSelector,
    PrometheusSource,
    QueuedGroup,
    RoleFacts,
    Signal,
    build_snapshot,
)
from tests.support.prometheus import PrometheusFactory, ScrapeTarget, static_job

pytestmark = pytest.mark.timeout(60)

NS: Final = "ml"
WINDOW_S: Final = 4.0
SCRAPE_S: Final = 1.0
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
SOON_S: Final = 1_900_000_120
LATER_S: Final = 1_900_000_600


@dataclass(frozen=True)
class FakeGateway:
    """One gateway pod: its queue by deadline, and `lengths` completing every second."""

    pod: str
    queue: Mapping[str, int] = field(default_factory=dict)
    lengths: tuple[float, ...] = ()

    @property
    def path(self) -> str:
        return f"/gateways/{self.pod}/metrics"

    def render(self, elapsed_s: float) -> str:
        count = len(self.lengths) * elapsed_s
        total = sum(self.lengths) * elapsed_s
        squares = sum(x * x for x in self.lengths) * elapsed_s
        lines = ["# TYPE chiron_gateway_batch_queued_requests gauge"]
        lines += [
            f'chiron_gateway_batch_queued_requests{{deadline="{d}"}} {n}'
            for d, n in self.queue.items()
        ]
        lines += [
            "# TYPE chiron_gateway_batch_queued_tokens gauge",
            f"chiron_gateway_batch_queued_tokens {300 * sum(self.queue.values())}",
            "# TYPE chiron_gateway_batch_output_tokens histogram",
            f'chiron_gateway_batch_output_tokens_bucket{{le="+Inf"}} {count!r}',
            f"chiron_gateway_batch_output_tokens_count {count!r}",
            f"chiron_gateway_batch_output_tokens_sum {total!r}",
            "# TYPE chiron_gateway_batch_output_tokens_squares_total counter",
            f"chiron_gateway_batch_output_tokens_squares_total {squares!r}",
        ]
        return "\n".join(lines) + "\n"


# Pool "llama": two replicas. The first is also scraped by a second job (a common accident),
# which must not count twice. Together: 4 requests/s of lengths 100, 200, 300 and 400.
FIRST = FakeGateway("llama-gateway-6d4f9-aaaaa", {str(SOON_S): 5, str(LATER_S): 2}, (100, 200, 300))
SECOND = FakeGateway("llama-gateway-6d4f9-bbbbb", {str(SOON_S): 3}, (400,))
# Pool "llama-gateway"'s gateway: pool "llama" must not read it.
NEIGHBOUR = FakeGateway("llama-gateway-gateway-5c6d7-ccccc", {str(SOON_S): 90}, (5000,) * 9)
# The same name in another namespace.
ELSEWHERE = FakeGateway(FIRST.pod, {str(SOON_S): 70}, (7000,))
MEAN: Final = 250.0
# Per request: E[x^2] = (100^2 + 200^2 + 300^2 + 400^2) / 4 = 75000, minus 250^2.
VARIANCE: Final = 75000.0 - MEAN**2


class FakeGateways:
    """One loopback HTTP server standing in for many gateway pods (one path each)."""

    def __init__(self, gateways: list[tuple[str, FakeGateway]]) -> None:
        self.gateways = gateways
        self._paths = {f"/{ns}{g.path}": g for ns, g in gateways}
        self.started_s = time.time()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._http.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = server._paths.get(self.path)
                if found is None:
                    self.send_error(404)
                    return
                body = found.render(time.time() - server.started_s).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        return Handler

    def targets(self, *only: FakeGateway) -> list[ScrapeTarget]:
        """Scrape targets labelled as the chart's gateway PodMonitor labels them."""
        return [
            ScrapeTarget(self.address, {"namespace": ns, "pod": g.pod}, f"/{ns}{g.path}")
            for ns, g in self.gateways
            if not only or g in only
        ]

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def source(module_prometheus_factory: PrometheusFactory) -> Iterator[PrometheusSource]:
    server = FakeGateways([(NS, FIRST), (NS, SECOND), (NS, NEIGHBOUR), ("other", ELSEWHERE)])
    try:
        prometheus = module_prometheus_factory(
            [
                static_job("gateway", server.targets()),
                static_job("gateway-again", server.targets(FIRST)),
            ]
        )
        prometheus.wait_for_first_scrape()
        # Increases over a full window: extrapolation is then exact for linear counters.
        time.sleep(WINDOW_S + 1.5)
        with PrometheusSource(prometheus.url) as found:
            yield found
    finally:
        server.close()


def query(pool: str) -> PoolQuery:
    return PoolQuery(
        PoolSelector(NS, pool),
        WINDOW_S,
        0.95,
        WINDOW_S,
        itl_window_s=itl_window_s(SCRAPE_S, WINDOW_S),
        gateway_length_window_s=WINDOW_S,
        gateway=True,
    )


def test_queue_per_deadline_summed_over_the_pools_gateways(source: PrometheusSource) -> None:
    fetched = source.fetch(query("llama"))
    assert fetched.error == ""
    assert fetched.queries == 7  # folded into one query with the lengths
    assert fetched.queue is not None
    # 5 + 3 due soon (not 5 twice, not the neighbour's 90, not the other namespace's 70).
    assert fetched.queue.groups == (QueuedGroup(SOON_S, 8), QueuedGroup(LATER_S, 2))
    assert 0.0 <= fetched.queue.sample_age_s < 3.0


def test_output_lengths_are_the_gateways_exact_moments(source: PrometheusSource) -> None:
    lengths = source.fetch(query("llama")).gateway_lengths
    assert lengths is not None
    # 4 requests per second over the window, whichever job scraped the first replica.
    assert lengths.completed_requests == pytest.approx(4 * WINDOW_S, rel=0.1)
    assert lengths.requests_per_s == pytest.approx(4.0, rel=0.1)
    # Each replica's moments are exact; the replicas are scraped at different instants, so
    # their increases are extrapolated by slightly different factors and weigh in a hair off.
    assert lengths.mean == pytest.approx(MEAN, rel=1e-3)
    n = lengths.completed_requests
    assert lengths.std == pytest.approx(math.sqrt(VARIANCE * n / (n - 1)), rel=1e-2)


def test_snapshot_batch_queue(source: PrometheusSource) -> None:
    fetched = source.fetch(query("llama"))
    lengths = fetched.gateway_lengths
    assert lengths is not None
    snap = build_snapshot(
        time.time(),
        roles={Role.BATCH: RoleFacts(1, 1, 0, 256)},
        pods=[],
        metrics=fetched,
        staleness_s=10.0,
        batch_deadline_s=3600.0,
    )
    queue = snap.batch_queue
    assert queue.groups == (BatchGroup(SOON_S, 8), BatchGroup(LATER_S, 2))
    assert (queue.output_tokens_mean, queue.output_tokens_std) == (lengths.mean, lengths.std)
    assert queue.output_tokens_samples == lengths.completed_requests
    assert queue.output_tokens_samples == pytest.approx(4 * WINDOW_S, rel=0.1)
    assert queue.sample_age_s < 4.0


def test_the_neighbour_pool_reads_only_its_own_gateway(source: PrometheusSource) -> None:
    fetched = source.fetch(query("llama-gateway"))
    assert fetched.queue is not None
    assert fetched.queue.groups == (QueuedGroup(SOON_S, 90),)
    assert fetched.gateway_lengths is not None
    assert fetched.gateway_lengths.mean == pytest.approx(5000.0, rel=1e-6)


def test_a_gateway_prometheus_never_scraped_is_an_unknown_queue(source: PrometheusSource) -> None:
    fetched = source.fetch(query("absent"))
    assert fetched.error == ""
    assert Signal.GATEWAY_BATCH in query("absent").queries()
    assert fetched.queue is not None
    assert (fetched.queue.groups, fetched.queue.sample_age_s) == ((), math.inf)
    assert fetched.gateway_lengths is not None
    assert math.isnan(fetched.gateway_lengths.mean)
    snap = build_snapshot(
        time.time(),
        roles={Role.BATCH: RoleFacts(1, 1, 0, 256)},
        pods=[],
        metrics=fetched,
        staleness_s=10.0,
        batch_deadline_s=3600.0,
    )
    assert snap.batch_queue.sample_age_s == math.inf  # the batch role holds, never scales down
