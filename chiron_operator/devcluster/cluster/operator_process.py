"""The real operator as a separate process (`python -m chiron_operator`) against the dev cluster.

A process rather than a thread: it is what ships, its identity is its own kubeconfig (so every
API call it makes can be attributed to it), a restart is a real restart (nothing survives in
memory), and its CPU time and memory can be measured from /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chiron_operator.devcluster.cluster.processes import free_port

READY_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 15.0
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class OperatorOptions:
    """How one operator process runs. `peering` None runs it `--standalone`."""

    kubeconfig: Path
    namespaces: tuple[str, ...] = ()  # empty: --all-namespaces
    peering: str | None = None
    priority: int | None = None
    verbose: bool = False
    extra_args: tuple[str, ...] = ()
    # The dev cluster's Prometheus listens on loopback, which the operator refuses unless told.
    prometheus_allow_cidrs: tuple[str, ...] = ("127.0.0.0/8",)

    def argv(self, metrics_port: int) -> list[str]:
        argv = [sys.executable, "-m", "chiron_operator", "--kubeconfig", str(self.kubeconfig)]
        argv += ["--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port)]
        for namespace in self.namespaces:
            argv += ["--namespace", namespace]
        if not self.namespaces:
            argv.append("--all-namespaces")
        argv += ["--standalone"] if self.peering is None else ["--peering", self.peering]
        if self.priority is not None:
            argv += ["--priority", str(self.priority)]
        if self.verbose:
            argv.append("--verbose")
        for cidr in self.prometheus_allow_cidrs:
            argv += ["--prometheus-allow-cidr", cidr]
        return [*argv, *self.extra_args]


class OperatorProcess:
    """One operator process: started, health-checked, measured, stopped (SIGTERM, then KILL)."""

    def __init__(self, options: OperatorOptions, log_path: Path) -> None:
        self.options = options
        self.log_path = log_path
        self.metrics_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the operator is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, wait: bool = True) -> OperatorProcess:
        """Spawn the process (in its own process group) and wait until /healthz answers 200."""
        self.metrics_port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.options.argv(self.metrics_port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"the operator exited early:\n{self.log()}")
            if self._healthy():
                return
            time.sleep(0.1)
        raise TimeoutError(f"the operator was not healthy within {timeout_s} s:\n{self.log()}")

    def _healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def metrics_text(self) -> str:
        """The operator's own /metrics page."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(answer.read().decode())

    def stop(self) -> int | None:
        """Graceful stop (kopf handles SIGTERM); SIGKILL to the group if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT_S)
        # The group too: whatever it forked must not outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait(STOP_TIMEOUT_S)

    def rss_bytes(self) -> int:
        """Resident set size now, from /proc (Linux)."""
        return self._status_bytes("VmRSS")

    def peak_rss_bytes(self) -> int:
        """The largest resident set size so far (the high-water mark), from /proc (Linux)."""
        return self._status_bytes("VmHWM")

    def _status_bytes(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {key} in /proc/{self.pid}/status")

    def cpu_seconds(self) -> float:
        """User + system CPU time consumed so far, from /proc (Linux)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: state is field 3, utime 14 and stime 15 (1-based).
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def log(self, tail_chars: int = 6000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail_chars:]

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
