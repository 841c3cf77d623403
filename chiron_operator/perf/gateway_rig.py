"""The processes the gateway benchmark measures: emulator pods and one `chiron-gateway`.

Each runs as its own process, as in production, so the gateway's CPU time can be read from
/proc and no benchmark code shares its event loop. Everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chiron_operator.devcluster.cluster.processes import free_port

HOST: Final = "127.0.0.1"
MODEL: Final = "bench"
READY_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: utime and stime are fields 14 and 15 (1-based) of the whole line.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (/proc/stat: all but idle and
    iowait), whoever spent them: the benchmark's processes and anything else running."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class Usage:
    """Seconds of wall time and of CPU time (the gateway, all pods, this process, which is the
    load generator, and the whole machine): cumulative readings, or the difference of two."""

    wall_s: float
    gateway_s: float
    pods_s: float
    generator_s: float
    machine_s: float

    def minus(self, start: Usage) -> Usage:
        return Usage(
            self.wall_s - start.wall_s,
            self.gateway_s - start.gateway_s,
            self.pods_s - start.pods_s,
            self.generator_s - start.generator_s,
            self.machine_s - start.machine_s,
        )

    def plus(self, other: Usage) -> Usage:
        return Usage(
            self.wall_s + other.wall_s,
            self.gateway_s + other.gateway_s,
            self.pods_s + other.pods_s,
            self.generator_s + other.generator_s,
            self.machine_s + other.machine_s,
        )

    @property
    def others_s(self) -> float:
        """Busy CPU time of everything else on the machine (other processes, the kernel's
        softirq work not charged to a process)."""
        return max(0.0, self.machine_s - self.gateway_s - self.pods_s - self.generator_s)

    def cores(self, cpu_s: float) -> float:
        """`cpu_s` as cores kept busy over the wall time."""
        return cpu_s / self.wall_s if self.wall_s > 0 else 0.0


class Service:
    """One server process: started in its own session, probed on /health, stopped by SIGTERM."""

    def __init__(self, name: str, argv: Sequence[str], port: int, log_path: Path) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.port = port
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self._log_tail()}")
            if self._healthy():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} was not healthy in time:\n{self._log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT_S)
        if process.poll() is None:
            process.kill()
        process.wait(STOP_TIMEOUT_S)

    def _log_tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


@dataclass(frozen=True, slots=True)
class RigOptions:
    """The pods and the gateway in front of them."""

    pods: int
    max_num_seqs: int
    time_scale: float


@dataclass(frozen=True, slots=True)
class Rig:
    """Running pods and the gateway (every pod an interactive endpoint of it)."""

    options: RigOptions
    pods: tuple[Service, ...]
    gateway: Service

    @property
    def pod_urls(self) -> tuple[str, ...]:
        return tuple(pod.url for pod in self.pods)

    def usage(self) -> Usage:
        """Cumulative readings now; subtract two for a phase."""
        return Usage(
            time.monotonic(),
            self.gateway.cpu_seconds(),
            sum(pod.cpu_seconds() for pod in self.pods),
            cpu_seconds(os.getpid()),
            machine_busy_seconds(),
        )


def _pod(index: int, options: RigOptions, workdir: Path) -> Service:
    port = free_port(HOST)
    argv = [sys.executable, "-m", "chiron_operator.emulator", MODEL, "--host", HOST]
    argv += ["--port", str(port), "--max-num-seqs", str(options.max_num_seqs)]
    argv += ["--scheduling-policy", "priority", "--time-scale", str(options.time_scale)]
    argv += ["--uvicorn-log-level", "warning"]
    return Service(f"pod-{index}", argv, port, workdir / f"pod-{index}.log")


def _gateway(pods: Sequence[Service], options: RigOptions, workdir: Path) -> Service:
    port = free_port(HOST)
    argv = [sys.executable, "-m", "chiron_operator.gateway", "--host", HOST, "--port", str(port)]
    argv += ["--log-level", "warning"]
    for i, pod in enumerate(pods):
        argv += ["--endpoint", f"interactive={pod.url},max-num-seqs={options.max_num_seqs}"]
        argv[-1] += f",name=pod-{i}"
    return Service("gateway", argv, port, workdir / "gateway.log")


@contextlib.contextmanager
def started(services: Sequence[Service]) -> Iterator[tuple[Service, ...]]:
    """Start `services` in order, wait until each answers /health, stop them in reverse after."""
    try:
        for service in services:
            service.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        for service in services:
            service.wait_ready(deadline)
        yield tuple(services)
    finally:
        for service in reversed(services):
            service.stop()


@contextlib.contextmanager
def running(options: RigOptions, workdir: Path) -> Iterator[Rig]:
    """Start the pods and the gateway, wait until each answers /health, stop them all after."""
    workdir.mkdir(parents=True, exist_ok=True)
    pods = tuple(_pod(i, options, workdir) for i in range(options.pods))
    with started((*pods, _gateway(pods, options, workdir))) as services:
        yield Rig(options, pods, services[-1])
