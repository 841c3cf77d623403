"""Fake vLLM pods for a real Prometheus: the real sample scrapes, replayed with moving counters.

Each pod serves the real scrape `tests/data/vllm_metrics_sample/vllm_metrics_under_load.txt`
line for line in the classic text format
(`text/plain; version=0.0.4`, colons kept), with every counter and histogram series advancing
linearly in time so rates and quantiles are known exactly:

    value(t) = base + delta * scale * (t - start) / PERIOD_S

LOAD replays the real run's change between the two scrapes (base: under load, delta: after -
under load); WHOLE replays the whole "after" scrape from zero (base 0, delta: after), which puts
observations in more buckets. Over any window the rate of a series is `delta * scale /
PERIOD_S`. Gauges keep the under-load value, except running, waiting and KV-cache usage, which
each pod sets. A legacy pod renames the two metrics vLLM renamed; a frozen pod stamps every
sample with a fixed timestamp 30 s in the past (as a federated or pushed series would be), which
Prometheus stores as is and never marks stale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

from tests.support.prometheus import ScrapeTarget

DATA: Final = Path(__file__).parents[1] / "data" / "vllm_metrics_sample"
UNDER_LOAD: Final = DATA / "vllm_metrics_under_load.txt"
AFTER: Final = DATA / "vllm_metrics_after.txt"
PERIOD_S: Final = 10.0
FROZEN_AGE_S: Final = 30.0
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LEGACY_RENAMES: Final = (
    ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
)
RUNNING: Final = "vllm:num_requests_running"
WAITING: Final = "vllm:num_requests_waiting"
KV: Final = "vllm:kv_cache_usage_perc"


class Profile(StrEnum):
    LOAD = "load"
    WHOLE = "whole"


@dataclass
class FakePod:
    """One pod's knobs; `served` may be flipped while Prometheus scrapes."""

    name: str
    namespace: str
    running: float
    waiting: float
    kv: float
    scale: float = 1.0
    profile: Profile = Profile.LOAD
    legacy: bool = False
    frozen: bool = False
    served: bool = True

    @property
    def path(self) -> str:
        return f"/pods/{self.namespace}/{self.name}/metrics"


@dataclass(frozen=True)
class Line:
    """One line of the scrape: a comment, or `head value` with its two recorded values."""

    head: str
    name: str
    moving: bool
    under: float
    after: float


def _types(text: str) -> dict[str, str]:
    return {
        parts[2]: parts[3]
        for line in text.splitlines()
        if line.startswith("# TYPE") and len(parts := line.split()) == 4
    }


def _moving(name: str, types: dict[str, str]) -> bool:
    if types.get(name) == "counter":
        return True
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and types.get(name.removesuffix(suffix)) in (
            "histogram",
            "summary",
        ):
            return True
    return False


def load_lines() -> list[Line]:
    """The sample scrape, line by line, with both recorded values of every series."""
    under_text, after_text = UNDER_LOAD.read_text(), AFTER.read_text()
    types = _types(under_text)
    lines = []
    for under, after in zip(under_text.splitlines(), after_text.splitlines(), strict=True):
        if under.startswith("#") or not under.strip():
            lines.append(Line(under, "", False, 0.0, 0.0))
            continue
        head, value = under.rsplit(" ", 1)
        after_head, after_value = after.rsplit(" ", 1)
        assert head == after_head, (head, after_head)
        name = head.split("{", 1)[0]
        lines.append(Line(head, name, _moving(name, types), float(value), float(after_value)))
    return lines


def served_value(line: Line, pod: FakePod, elapsed_s: float) -> float:
    """What `pod` serves for `line` at `elapsed_s` after the server started."""
    gauges = {RUNNING: pod.running, WAITING: pod.waiting, KV: pod.kv}
    if line.name in gauges:
        return gauges[line.name]
    if not line.moving:
        return line.under
    progress = pod.scale * max(0.0, elapsed_s) / PERIOD_S
    if pod.profile is Profile.WHOLE:
        return line.after * progress
    return line.under + (line.after - line.under) * progress


def served_rate(name: str, pod: FakePod, match: str = "") -> float:
    """The per-second rate of the series `name` (first line containing `match`) for `pod`."""
    for line in LINES:
        if line.name == name and match in line.head:
            delta = line.after if pod.profile is Profile.WHOLE else line.after - line.under
            return delta * pod.scale / PERIOD_S
    raise KeyError(name)


LINES: Final = load_lines()


def render(pod: FakePod, elapsed_s: float, frozen_at_s: float) -> str:
    """The pod's scrape at `elapsed_s` after the server started (a frozen pod's at 0, stamped
    `frozen_at_s`)."""
    suffix = f" {int(frozen_at_s * 1000)}" if pod.frozen else ""
    at = 0.0 if pod.frozen else elapsed_s
    out = []
    for line in LINES:
        if not line.name:
            out.append(line.head)
        else:
            out.append(f"{line.head} {served_value(line, pod, at)!r}{suffix}")
    text = "\n".join(out) + "\n"
    if pod.legacy:
        for new, old in LEGACY_RENAMES:
            text = text.replace(new, old)
    return text


class FakeVllmServer:
    """One loopback HTTP server standing in for many vLLM pods (one path each) and a queue."""

    def __init__(self, pods: Iterable[FakePod], queue_text: str = "") -> None:
        self.pods = {p.path: p for p in pods}
        self.queue_text = queue_text
        self.started_s = time.time()
        self.frozen_at_s = self.started_s - FROZEN_AGE_S
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._http.server_address[1]}"

    def _body(self, path: str) -> bytes | None:
        if path == "/queue/metrics":
            return self.queue_text.encode()
        pod = self.pods.get(path)
        if pod is None or not pod.served:
            return None
        return render(pod, time.time() - self.started_s, self.frozen_at_s).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = server._body(self.path)
                if body is None:
                    self.send_error(503, "pod not serving")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        return Handler

    def targets(self) -> list[ScrapeTarget]:
        """One scrape target per pod, labelled as Kubernetes service discovery would."""
        return [
            ScrapeTarget(self.address, {"pod": p.name, "namespace": p.namespace}, p.path)
            for p in self.pods.values()
        ]

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)
