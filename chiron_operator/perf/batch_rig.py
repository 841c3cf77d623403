"""The processes the batch benchmark measures, and what it reads of the gateway.

An upstream that answers at once (`batch_upstream`) and one `chiron-gateway` with a store of its
own, each its own process on 127.0.0.1 (`gateway_rig.Service`). The gateway is read from the
outside only, as an operator would: its `/metrics` (the batch queue, the requests it completed)
and /proc (memory, and CPU time per thread, so the event loop's share and the store's worker
thread's can be told apart).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chiron_operator.devcluster.cluster.processes import free_port
from chiron_operator.gateway.metrics import BATCH_QUEUED, REQUESTS
from chiron_operator.perf.gateway_rig import (
    CLOCK_TICKS,
    HOST,
    Service,
    cpu_seconds,
    machine_busy_seconds,
    started,
)

MODEL: Final = "bench"
KIB: Final = 1024
_FINISHED_SERIES: Final = tuple(
    REQUESTS + f'_total{{class="batch",outcome="{outcome}"}}' for outcome in ("completed", "failed")
)


def proc_status_bytes(pid: int, field: str) -> int:
    """A memory field of /proc/<pid>/status (`VmRSS`, `VmHWM`: the peak RSS so far) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * KIB  # the kernel reports kB
    raise KeyError(f"/proc/{pid}/status has no {field}")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of process `pid` (threads that ended are gone:
    their time is only in the process's total)."""
    found: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


@dataclass(frozen=True, slots=True)
class Reading:
    """One look at the gateway: when, its counters and its CPU time so far."""

    at_s: float  # time.monotonic()
    queued: int  # batch requests in its queue, every deadline group
    finished: int  # batch requests it answered for good (completed or failed) since it started
    cpu_s: float  # the whole process
    loop_cpu_s: float  # its main thread, which runs the event loop
    machine_s: float  # busy CPU seconds of the whole machine, whoever spent them
    others_s: float  # of which neither the gateway's, the upstream's nor this process's


class GatewayProbe:
    """Reads a running gateway: its `/metrics` and /proc; and, to tell what else kept the
    machine busy meanwhile, the upstream's CPU time and this process's."""

    def __init__(self, gateway: Service, upstream: Service) -> None:
        self.gateway = gateway
        self.upstream = upstream

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.gateway.url + "/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    def read(self) -> Reading:
        queued = finished = 0.0
        for line in self.metrics_text().splitlines():
            if line.startswith(BATCH_QUEUED + "{"):
                queued += float(line.rsplit(" ", 1)[1])
            elif line.startswith(_FINISHED_SERIES):
                finished += float(line.rsplit(" ", 1)[1])
        pid = self.gateway.pid
        loop_s = thread_cpu_seconds(pid).get(pid, 0.0)
        cpu_s, machine_s = self.cpu_s(), machine_busy_seconds()
        others_s = machine_s - cpu_s - self.upstream.cpu_seconds() - cpu_seconds(os.getpid())
        return Reading(
            time.monotonic(), int(queued), int(finished), cpu_s, loop_s, machine_s, others_s
        )

    def cpu_s(self) -> float:
        return self.gateway.cpu_seconds()

    def rss_bytes(self) -> int:
        return proc_status_bytes(self.gateway.pid, "VmRSS")

    def peak_rss_bytes(self) -> int:
        return proc_status_bytes(self.gateway.pid, "VmHWM")


def upstream_service(workdir: Path) -> Service:
    port = free_port(HOST)
    argv = [sys.executable, "-m", "chiron_operator.perf.batch_upstream", "--port", str(port)]
    return Service("upstream", [*argv, "--model", MODEL], port, workdir / "upstream.log")


def gateway_service(
    upstream: Service, store_url: str, max_num_seqs: int | None, workdir: Path
) -> Service:
    """A gateway whose one batch pod is `upstream`. Without `max_num_seqs` (and no `--target`)
    the pod's cap is 0: the gateway validates and queues batches but sends nothing, so an
    intake can be measured with the whole file held in its queue."""
    port = free_port(HOST)
    endpoint = f"batch={upstream.url},name=batch-0"
    if max_num_seqs is not None:
        endpoint += f",max-num-seqs={max_num_seqs}"
    argv = [sys.executable, "-m", "chiron_operator.gateway", "--host", HOST, "--port", str(port)]
    argv += ["--log-level", "warning", "--store", store_url, "--endpoint", endpoint]
    return Service("gateway", argv, port, workdir / "gateway.log")


@contextlib.contextmanager
def running(
    store_url: str, max_num_seqs: int | None, workdir: Path
) -> Iterator[tuple[Service, Service]]:
    """The upstream and a gateway on `store_url` in front of it, until the context ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    upstream = upstream_service(workdir)
    gateway = gateway_service(upstream, store_url, max_num_seqs, workdir)
    with started((upstream, gateway)):
        yield upstream, gateway
