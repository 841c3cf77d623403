"""Pods as local processes: what runs for a container, and a supervisor per pod.

A `PodRuntime` decides which process stands in for a pod's container (the demo runs
`chiron-emulator` with the container's `vllm serve` arguments; tests run something trivial).
`PodProcess` supervises it like a kubelet does a container with `restartPolicy: Always`:
start, probe readiness over HTTP, restart after a crash (with a back-off), and stop with
SIGTERM, then SIGKILL after the grace period.

Every pod shares 127.0.0.1, so each gets its own free port: the runtime receives the
container's args with `--port` rewritten to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

logger = logging.getLogger(__name__)

PORT_FLAGS = ("--port",)


@dataclass(frozen=True, slots=True)
class Launch:
    """What a pod asks to run: its identity, its container, and the port it must serve on."""

    namespace: str
    pod: str
    port: int
    command: tuple[str, ...]
    args: tuple[str, ...]  # the container's args, with --port set to `port`
    env: Mapping[str, str]  # the container's env (values only; valueFrom is not resolved)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """A process to start: argv, its whole environment, and its working directory."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None = None


class PodRuntime(Protocol):
    """Turns a pod's container into a local process."""

    def process(self, launch: Launch) -> ProcessSpec:
        """The process standing in for the pod's container."""
        ...


@dataclass(frozen=True, slots=True)
class ContainerRuntime:
    """Runs the container's args under a local program instead of the image's command.

    `ContainerRuntime(("chiron-emulator",))` turns `vllm serve MODEL --port 8000 ...` into
    `chiron-emulator MODEL --port <free port> ... --host 127.0.0.1`. The environment is this
    process's (so PATH and the virtualenv work) plus the container's.
    """

    program: tuple[str, ...]
    extra_args: tuple[str, ...] = ("--host", "127.0.0.1")

    def process(self, launch: Launch) -> ProcessSpec:
        """The program with the container's args."""
        argv = (*self.program, *launch.args, *self.extra_args)
        return ProcessSpec(argv=argv, env={**os.environ, **launch.env})


def with_port(args: Sequence[str], port: int) -> tuple[str, ...]:
    """`args` with the `--port` value replaced (appended when absent)."""
    out: list[str] = []
    placed = skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in PORT_FLAGS or arg.startswith(tuple(f"{f}=" for f in PORT_FLAGS)):
            skip = "=" not in arg
            out += [] if placed else ["--port", str(port)]
            placed = True
        else:
            out.append(arg)
    return tuple(out) if placed else (*out, "--port", str(port))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PodProcess:
    """One pod's process, kept running and probed until stopped."""

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        probe_url: str | None,
        session: aiohttp.ClientSession,
        on_change: Callable[[], None],
        log_path: Path | None = None,
        probe_interval_s: float = 0.2,
        restart_backoff_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.ready = False
        self.restarts = 0
        self.started = False
        self.stopping = False
        self._probe_url = probe_url
        self._session = session
        self._on_change = on_change
        self._log_path = log_path
        self._probe_interval_s = probe_interval_s
        self._restart_backoff_s = restart_backoff_s
        self._proc: asyncio.subprocess.Process | None = None
        self._spawning: asyncio.Future[asyncio.subprocess.Process] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The running process's id (None between restarts)."""
        return None if self._proc is None or self._proc.returncode is not None else self._proc.pid

    def start(self) -> None:
        """Start supervising (in the running event loop)."""
        self._task = asyncio.create_task(self._supervise(), name=f"pod {self.spec.argv[0]}")

    async def _supervise(self) -> None:
        while not self.stopping:
            # Shielded: a stop() that cancels the supervisor mid-spawn still gets the process
            # (to signal it) instead of leaking it.
            self._spawning = asyncio.ensure_future(self._spawn())
            try:
                self._proc = await asyncio.shield(self._spawning)
            except OSError as exc:
                logger.warning("cannot start %s: %s", self.spec.argv, exc)
            else:
                self.started = True
                self._on_change()
                await self._probe_until_exit(self._proc)
                if self.stopping:
                    return
                logger.warning(
                    "pod process %s exited with %s", self._proc.pid, self._proc.returncode
                )
            self.restarts += 1
            self._set_ready(False)
            await asyncio.sleep(self._restart_backoff_s)

    async def _spawn(self) -> asyncio.subprocess.Process:
        output = open(self._log_path, "ab") if self._log_path else None  # noqa: SIM115
        try:
            return await asyncio.create_subprocess_exec(
                *self.spec.argv,
                env=dict(self.spec.env),
                cwd=self.spec.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output or asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.STDOUT if output else asyncio.subprocess.DEVNULL,
                # Its own process group, so SIGTERM reaches whatever it forks as well.
                start_new_session=True,
            )
        finally:
            if output is not None:
                output.close()

    async def _probe_until_exit(self, proc: asyncio.subprocess.Process) -> None:
        exited = asyncio.ensure_future(proc.wait())
        try:
            while not exited.done():
                self._set_ready(await self._probe())
                await asyncio.wait({exited}, timeout=self._probe_interval_s)
        finally:
            exited.cancel()

    async def _probe(self) -> bool:
        if self._probe_url is None:
            return True  # no readinessProbe: ready once running, as in Kubernetes
        timeout = aiohttp.ClientTimeout(total=1.0)
        try:
            async with self._session.get(self._probe_url, timeout=timeout) as response:
                return 200 <= response.status < 400
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready = ready
            self._on_change()

    async def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after `grace_s`; returns once the process is gone."""
        self.stopping = True
        self._set_ready(False)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._spawning is not None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                self._proc = await self._spawning
        proc = self._proc
        if proc is not None and proc.returncode is None:
            _signal(proc, signal.SIGTERM)
            try:
                async with asyncio.timeout(grace_s):
                    await proc.wait()
            except TimeoutError:
                _signal(proc, signal.SIGKILL)
                await proc.wait()


def _signal(proc: asyncio.subprocess.Process, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)
