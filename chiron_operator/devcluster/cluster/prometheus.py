"""A private Prometheus server for the dev cluster: loopback port, temporary TSDB, file_sd.

The Debian `prometheus` binary (`make system-deps`) runs with a generated config: one job
discovering the kubelet's ready pods through `file_sd` files, plus optional static jobs (a batch
queue exporter, a fake fleet). It can be stopped and started again on the same port, which is
how an outage looks to a client that keeps the URL.

Timing facts every user of it has to plan for: the server is ready in ~0.1 s, but service
discovery hands targets to the scrapers at most every 5 s (Prometheus' fixed throttle), so a
new pod's first sample lands up to ~5 s plus one scrape interval after it became ready.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from chiron_operator.devcluster.cluster.processes import free_port

READY_TIMEOUT_S: Final = 15.0
STOP_TIMEOUT_S: Final = 5.0
FALLBACK_BINARY: Final = Path("/usr/bin/prometheus")


class PrometheusMissingError(RuntimeError):
    """The prometheus binary is not installed."""


def prometheus_binary() -> str:
    """The prometheus executable, or PrometheusMissingError saying how to install it."""
    found = shutil.which("prometheus") or (
        str(FALLBACK_BINARY) if FALLBACK_BINARY.exists() else None
    )
    if found is None:
        raise PrometheusMissingError(
            "prometheus is not installed: run `make system-deps` "
            "(apt-get install -y --no-install-recommends prometheus)"
        )
    return found


def wait_ready(url: str, alive: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Poll Prometheus's /-/ready at `url` until it answers 200 (True), the process is no
    longer `alive` or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return False
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/-/ready", timeout=1) as answer,
        ):
            if answer.status == 200:
                return True
        time.sleep(0.05)
    return False


def _interval(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True, slots=True)
class StaticJob:
    """A scrape job over fixed `host:port` targets (all on loopback)."""

    name: str
    targets: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


def scrape_config(
    file_sd_paths: Sequence[Path], static_jobs: Sequence[StaticJob], interval_s: float
) -> dict[str, Any]:
    """The whole config document (JSON is YAML, so no YAML writer is needed)."""
    interval = _interval(interval_s)
    jobs: list[dict[str, Any]] = []
    if file_sd_paths:
        jobs.append(
            {
                "job_name": "vllm",
                "scrape_interval": interval,
                "scrape_timeout": interval,
                # Inotify sees every rewrite at once; the refresh is only a fallback.
                "file_sd_configs": [
                    {"files": [str(p) for p in file_sd_paths], "refresh_interval": "5s"}
                ],
            }
        )
    for job in static_jobs:
        jobs.append(
            {
                "job_name": job.name,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "metrics_path": job.metrics_path,
                "static_configs": [{"targets": list(job.targets), "labels": dict(job.labels)}],
            }
        )
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }


class PrometheusProcess:
    """One Prometheus process on 127.0.0.1; `stop()` then `start()` keeps its port and TSDB."""

    def __init__(
        self,
        workdir: Path,
        *,
        file_sd_paths: Sequence[Path] = (),
        static_jobs: Sequence[StaticJob] = (),
        scrape_interval_s: float = 1.0,
        port: int = 0,
    ) -> None:
        self.workdir = workdir
        self.file_sd_paths = tuple(file_sd_paths)
        self.static_jobs = tuple(static_jobs)
        self.scrape_interval_s = scrape_interval_s
        self.port = port
        self.config_path = workdir / "prometheus.json"
        self.log_path = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> PrometheusProcess:
        """Start (on the previous port if it ran before) and wait until /-/ready answers."""
        binary = prometheus_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = scrape_config(self.file_sd_paths, self.static_jobs, self.scrape_interval_s)
        self.config_path.write_text(json.dumps(config, indent=1))
        self.port = self.port or free_port()
        args = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if not self._wait_ready():
            self.stop()
            raise RuntimeError(f"prometheus did not become ready:\n{self.log()}")
        return self

    def _wait_ready(self) -> bool:
        return wait_ready(self.url, lambda: self.running)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period. Idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET an API path; the decoded JSON's `data`."""
        query = "?" + urllib.parse.urlencode(dict(params)) if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as answer:
            return json.load(answer)["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (or matrix, for a range selector)."""
        result: list[dict[str, Any]] = self.get("/api/v1/query", {"query": promql})["result"]
        return result

    def log(self, tail_chars: int = 4000) -> str:
        """The end of the server's log, for error messages."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail_chars:]

    def __enter__(self) -> PrometheusProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
