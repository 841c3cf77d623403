"""A real Prometheus server for tests: private config, TSDB and loopback port, always stopped.

The Debian `prometheus` binary (2.42) is started on 127.0.0.1 with a temporary config and
TSDB. It is ready in ~0.1 s, but its first scrape lands ~5 s after start (service discovery is
throttled), and targets added by a reload take as long again: start one server per test module
and wait once.

    from tests.support.prometheus import ScrapeTarget, static_job

    def test_scrapes(prometheus_factory):  # or module_prometheus_factory
        target = ScrapeTarget("127.0.0.1:8000", {"pod": "p", "namespace": "ns"})
        prom = prometheus_factory([static_job("vllm", [target])])
        prom.wait_for_first_scrape()
        prom.query("up")

Import the fixtures into a conftest.py (`from tests.support.prometheus import
prometheus_factory`) to use them. Without the binary the tests fail, saying how to install it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import pytest

from chiron_operator.devcluster.cluster.processes import free_port
from chiron_operator.devcluster.cluster.prometheus import PrometheusMissingError, wait_ready
from chiron_operator.devcluster.cluster.prometheus import prometheus_binary as find_prometheus

# First scrape ~5 s after start (discovery throttle) plus one scrape interval, with slack for a
# loaded two-core machine.
FIRST_SCRAPE_TIMEOUT_S: Final = 8.0
READY_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 5.0
NEVER_SCRAPED: Final = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class ScrapeTarget:
    """One static target: `host:port` and the labels its series get (e.g. pod, namespace).

    `metrics_path` overrides the job's path for this target only (via the `__metrics_path__`
    label), so one HTTP server can stand in for many pods.
    """

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str | None = None

    def group(self) -> dict[str, Any]:
        labels = dict(self.labels)
        if self.metrics_path is not None:
            labels["__metrics_path__"] = self.metrics_path
        return {"targets": [self.address], "labels": labels}


def static_job(
    name: str,
    targets: Sequence[ScrapeTarget],
    *,
    scrape_interval_s: float = 1.0,
    metrics_path: str = "/metrics",
) -> dict[str, Any]:
    """A scrape job over static targets, as `scrape_configs` holds it."""
    interval = f"{round(scrape_interval_s * 1000)}ms"
    return {
        "job_name": name,
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "metrics_path": metrics_path,
        "static_configs": [t.group() for t in targets],
    }


def prometheus_binary() -> str:
    """The prometheus executable; its absence fails the test (`make test` installs it)."""
    try:
        return find_prometheus()
    except PrometheusMissingError as exc:
        pytest.fail(str(exc))


def _expected_identities(jobs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    # A static target is known by its job, address and group labels, all of which Prometheus
    # reports back in the active target's `discoveredLabels`.
    found = []
    for job in jobs:
        for group in job.get("static_configs", ()):
            for address in group.get("targets", ()):
                found.append(
                    {"job": job["job_name"], "__address__": address, **group.get("labels", {})}
                )
    return found


class PrometheusServer:
    """One private Prometheus process. Use as a context manager, or call `stop()`."""

    def __init__(
        self, workdir: Path, jobs: Sequence[Mapping[str, Any]], *, binary: str | None = None
    ) -> None:
        self.workdir = workdir
        self.jobs = list(jobs)
        self.binary = binary or prometheus_binary()
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self.config_path = workdir / "prometheus.json"
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, attempts: int = 3) -> Self:
        """Start on a free port and wait for /-/ready; retry on another port if it is taken."""
        self._write_config()
        for _ in range(attempts):
            self.port = free_port()
            self._spawn()
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"prometheus did not become ready:\n{self.log()}")

    def _write_config(self) -> None:
        # JSON is YAML: no YAML writer needed.
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": self.jobs,
        }
        self.config_path.write_text(json.dumps(config, indent=1))

    def _spawn(self) -> None:
        tsdb = self.workdir / f"tsdb-{self.port}"
        args = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _wait_ready(self) -> bool:
        process = self._process
        return wait_ready(
            self.url, lambda: process is not None and process.poll() is None, READY_TIMEOUT_S
        )

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as answer:
            return json.load(answer)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's `data.result`."""
        result: list[dict[str, Any]] = self._get(
            "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        )["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        """The active targets as /api/v1/targets reports them."""
        active: list[dict[str, Any]] = self._get("/api/v1/targets?state=active")["data"][
            "activeTargets"
        ]
        return active

    def wait_for_first_scrape(
        self, timeout_s: float = FIRST_SCRAPE_TIMEOUT_S, *, require_up: bool = True
    ) -> None:
        """Wait until every configured static target has been scraped (and is up, by default)."""
        expected = _expected_identities(self.jobs)
        deadline = time.monotonic() + timeout_s
        pending = expected
        while time.monotonic() < deadline:
            active = self.targets()
            pending = [
                e for e in expected if not any(self._scraped(t, e, require_up) for t in active)
            ]
            if not pending:
                return
            time.sleep(0.1)
        raise TimeoutError(
            f"{len(pending)} target(s) not scraped within {timeout_s} s, e.g. {pending[0]}"
        )

    @staticmethod
    def _scraped(target: Mapping[str, Any], identity: Mapping[str, str], require_up: bool) -> bool:
        labels = target.get("discoveredLabels", {})
        if any(labels.get(k) != v for k, v in identity.items()):
            return False
        if target.get("lastScrape", NEVER_SCRAPED).startswith("0001-"):
            return False
        return not require_up or target.get("health") == "up"

    def reload(self, jobs: Sequence[Mapping[str, Any]]) -> None:
        """Apply new scrape jobs (POST /-/reload); new targets take ~5 s to be scraped."""
        self.jobs = list(jobs)
        self._write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            if answer.status != 200:
                raise RuntimeError(f"reload answered {answer.status}:\n{self.log()}")

    def stop(self) -> None:
        """Terminate the process (kill it if it lingers). Idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self, tail_chars: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail_chars:]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


PrometheusFactory = Callable[[Sequence[Mapping[str, Any]]], PrometheusServer]


@contextlib.contextmanager
def _fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    servers: list[PrometheusServer] = []

    def start(jobs: Sequence[Mapping[str, Any]]) -> PrometheusServer:
        server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), jobs)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def prometheus_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    """Start Prometheus servers (`factory(jobs)`); all are stopped after the test."""
    with _fleet(tmp_path_factory) as start:
        yield start


@pytest.fixture(scope="module")
def module_prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusFactory]:
    """As `prometheus_factory`, shared by a test module (one ~5 s first-scrape wait per module)."""
    with _fleet(tmp_path_factory) as start:
        yield start
